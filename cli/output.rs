//! Printing objects: aligned tables for people, JSON and YAML for programs.

use crate::terminal::shown;
use reef_api::*;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

/// Prints objects in `format`; with `event`, a watch line (its type leads the row).
pub fn print(
    kind: Kind,
    objects: &[RawObject],
    format: Format,
    namespaces: bool,
    event: Option<WatchEventType>,
) {
    match format {
        Format::Json => {
            for obj in objects {
                match event {
                    Some(e) => print_json(&serde_json::json!({"type": e, "object": obj})),
                    None => print_json(obj),
                }
            }
        }
        Format::Yaml => {
            for obj in objects {
                println!("---");
                print!(
                    "{}",
                    shown(&to_yaml(&serde_json::to_value(obj).unwrap_or_default()))
                );
            }
        }
        Format::Table | Format::Wide => {
            let (mut header, rows) = table(kind, objects, format == Format::Wide);
            let mut rows: Vec<Vec<String>> = rows;
            if namespaces && kind.namespaced() {
                header.insert(0, "NAMESPACE");
                for (row, obj) in rows.iter_mut().zip(objects) {
                    row.insert(0, obj.namespace().to_string());
                }
            }
            if let Some(e) = event {
                header.insert(0, "EVENT");
                for row in &mut rows {
                    row.insert(0, format!("{e:?}").to_uppercase());
                }
            }
            if objects.is_empty() && event.is_none() {
                eprintln!("No {} found.", kind.plural());
                return;
            }
            let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
            print!(
                "{}",
                shown(&align(event.is_none().then_some(&header), &rows))
            );
        }
    }
}

/// Prints an aligned table with a header.
pub fn print_rows(header: &[&str], rows: &[Vec<String>]) {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    print!("{}", shown(&align(Some(&header), rows)));
}

fn align(header: Option<&Vec<String>>, rows: &[Vec<String>]) -> String {
    let all: Vec<&Vec<String>> = header.into_iter().chain(rows.iter()).collect();
    let columns = all.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            all.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in all {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == row.len() {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// "5s", "3m", "2h", "4d" since creation, like kubectl's AGE.
fn age(obj: &RawObject) -> String {
    let Some(age) = obj.metadata.created_at.as_deref().and_then(reef_api::age) else {
        return "<unknown>".into();
    };
    let s = age.as_secs();
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn table(kind: Kind, objects: &[RawObject], wide: bool) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let rows = |f: &dyn Fn(&RawObject) -> Vec<String>| objects.iter().map(f).collect::<Vec<_>>();
    match kind {
        Kind::Pod => {
            let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "NODE", "AGE"];
            if wide {
                header.extend(["CPU", "MEMORY", "LAST ERROR"]);
            }
            (
                header,
                rows(&|o| {
                    let Ok(p) = o.typed::<PodSpec, PodStatus>() else {
                        return vec![o.metadata.name.clone(), "?".into()];
                    };
                    let mut row = vec![
                        p.metadata.name.clone(),
                        if p.status.ready { "1/1" } else { "0/1" }.to_string(),
                        // As kubectl: a pod waiting out a back-off says so.
                        match p.status.reason.as_deref() {
                            Some(reason @ "CrashLoopBackOff") => reason.to_string(),
                            _ => p.status.phase.to_string(),
                        },
                        p.status.restarts.to_string(),
                        p.spec.node.clone().unwrap_or_else(|| "<none>".into()),
                        age(o),
                    ];
                    if wide {
                        row.push(p.spec.cpu.to_string());
                        row.push(p.spec.memory.to_string());
                        row.push(p.status.last_error.clone().unwrap_or_default());
                    }
                    row
                }),
            )
        }
        Kind::Deployment => (
            vec![
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AUTOSCALE",
                "AGE",
                "LAST SCALE",
            ],
            rows(&|o| {
                let Ok(d) = o.typed::<DeploymentSpec, DeploymentStatus>() else {
                    return vec![o.metadata.name.clone(), "?".into()];
                };
                let wanted = reef_api::autoscale::wanted_replicas(&d.spec, &d.status);
                let (range, reason) = match (&d.spec.autoscale, &d.status.autoscale) {
                    (Some(a), scaled) => (
                        format!("{}-{} @{}", a.min, a.max, a.concurrency),
                        scaled.as_ref().map_or(String::new(), |s| {
                            let since = reef_api::age(&s.at)
                                .map(|d| format!("{}s ago: ", d.as_secs()))
                                .unwrap_or_default();
                            format!("{since}{}", s.reason)
                        }),
                    ),
                    (None, _) => ("-".to_string(), String::new()),
                };
                let reason = if wide || reason.chars().count() <= 60 {
                    reason
                } else {
                    format!("{}…", reason.chars().take(59).collect::<String>())
                };
                vec![
                    d.metadata.name.clone(),
                    format!("{}/{wanted}", d.status.ready_replicas),
                    d.status.updated_replicas.to_string(),
                    d.status.ready_replicas.to_string(),
                    range,
                    age(o),
                    reason,
                ]
            }),
        ),
        Kind::Service => (
            vec!["NAME", "HOST", "PATH", "ENDPOINTS", "AGE"],
            rows(&|o| {
                let Ok(s) = o.typed::<ServiceSpec, ServiceStatus>() else {
                    return vec![o.metadata.name.clone(), "?".into()];
                };
                let endpoints = if s.status.endpoints.is_empty() {
                    "<none>".to_string()
                } else {
                    let names: Vec<&str> =
                        s.status.endpoints.iter().map(|e| e.pod.as_str()).collect();
                    if wide || names.len() <= 2 {
                        names.join(",")
                    } else {
                        format!("{},{} + {} more", names[0], names[1], names.len() - 2)
                    }
                };
                vec![
                    s.metadata.name.clone(),
                    s.spec.host.clone().unwrap_or_else(|| "*".into()),
                    s.spec.path.clone(),
                    endpoints,
                    age(o),
                ]
            }),
        ),
        Kind::Node => {
            let mut header = vec!["NAME", "STATUS", "CPU", "MEMORY", "PODS", "AGE"];
            if wide {
                header.extend(["INGRESS", "ADDRESS", "LEASE"]);
            }
            (
                header,
                rows(&|o| {
                    let Ok(n) = o.typed::<NodeSpec, NodeStatus>() else {
                        return vec![o.metadata.name.clone(), "?".into()];
                    };
                    let mut status = if n.status.is_ready() {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                    .to_string();
                    if n.spec.unschedulable {
                        status.push_str(",SchedulingDisabled");
                    }
                    let mut row = vec![
                        n.metadata.name.clone(),
                        status,
                        n.spec.allocatable.cpu.to_string(),
                        n.spec.allocatable.memory.to_string(),
                        n.spec.allocatable.pods.to_string(),
                        age(o),
                    ];
                    if wide {
                        row.push(n.spec.ingress.clone());
                        row.push(n.spec.address.clone());
                        row.push(n.status.lease.clone().unwrap_or_default());
                    }
                    row
                }),
            )
        }
        Kind::Blob => (
            vec!["NAME", "SIZE", "AGE"],
            rows(&|o| {
                let size = o.spec.get("size").and_then(Value::as_u64).unwrap_or(0);
                vec![o.metadata.name.clone(), size.to_string(), age(o)]
            }),
        ),
        Kind::Tenant => (
            vec!["NAME", "CPU", "MEMORY", "PODS", "AGE"],
            rows(&|o| {
                let field = |k: &str| {
                    o.spec
                        .get(k)
                        .map(|v| v.to_string().trim_matches('"').to_string())
                        .unwrap_or_else(|| "-".into())
                };
                vec![
                    o.metadata.name.clone(),
                    field("cpu"),
                    field("memory"),
                    field("pods"),
                    age(o),
                ]
            }),
        ),
        Kind::Event => (
            vec!["LAST SEEN", "REASON", "OBJECT", "COUNT", "MESSAGE"],
            rows(&|o| {
                let Ok(e) = o.typed::<EventSpec, Value>() else {
                    return vec![o.metadata.name.clone(), "?".into()];
                };
                vec![
                    e.spec.last_seen.clone().unwrap_or_default(),
                    e.spec.reason.clone(),
                    format!(
                        "{}/{}",
                        e.spec.involved.kind.singular(),
                        e.spec.involved.name
                    ),
                    e.spec.count.to_string(),
                    e.spec.message.clone(),
                ]
            }),
        ),
    }
}

/// A small JSON → YAML writer: enough for objects (maps, lists, scalars).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
                && !["true", "false", "null", "yes", "no"].contains(&s.as_str())
                && s.parse::<f64>().is_err();
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_yaml(v, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_yaml(v, indent, out);
                    }
                    Value::Object(_) => out.push_str(&format!("{pad}{k}: {{}}\n")),
                    Value::Array(_) => out.push_str(&format!("{pad}{k}: []\n")),
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(v))),
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        write_yaml(item, indent + 2, &mut inner);
                        out.push_str(&format!("{pad}- {}", inner.trim_start()));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", scalar(item))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_of_nested_object() {
        let v = serde_json::json!({"a": {"b": 1, "c": ["x", {"d": "two words"}]}, "e": []});
        assert_eq!(
            to_yaml(&v),
            "a:\n  b: 1\n  c:\n  - x\n  - d: \"two words\"\ne: []\n"
        );
    }

    #[test]
    fn columns_align() {
        let header = vec!["A".to_string(), "BB".to_string()];
        let rows = vec![vec!["long".to_string(), "x".to_string()]];
        assert_eq!(align(Some(&header), &rows), "A      BB\nlong   x\n");
    }
}
