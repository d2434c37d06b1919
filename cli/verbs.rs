//! Client verbs: each reads the client config, talks to the API, prints for people
//! (tables) or programs (`-o json`).

use crate::output::{self, Format};
use crate::terminal::shown;
use crate::{CliResult, Failure};
use futures::StreamExt;
use reef_api::config::ClientConfig;
use reef_api::manifest;
use reef_api::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configured client and namespace (`-n` beats the config, which beats "default").
pub fn connect(namespace: Option<String>) -> Result<(Client, String), Failure> {
    let (config, namespace) = settings(namespace)?;
    Ok((client_of(config)?, namespace))
}

/// A client for the configured servers, token and CA.
fn client_of(config: ClientConfig) -> Result<Client, Failure> {
    let client = Client::new(config.server, config.token)?;
    Ok(match &config.ca {
        Some(ca) => client.with_ca(ca)?,
        None => client,
    })
}

/// The client config and the namespace to use, without connecting.
fn settings(namespace: Option<String>) -> Result<(ClientConfig, String), Failure> {
    let config = ClientConfig::load().map_err(Failure::usage)?;
    let namespace = namespace
        .or(config.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    Ok((config, namespace))
}

fn parse_kind(kind: &str) -> Result<Kind, Failure> {
    Kind::parse(kind).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        let hint = match suggest::nearest(kind, known.iter().copied()) {
            Some(s) => format!("did you mean {s:?}?"),
            None => format!("known kinds: {}", known.join(", ")),
        };
        Failure::usage(format!("error: unknown kind {kind:?}; {hint}"))
    })
}

fn load_manifest(file: &Path, namespace: &str) -> Result<manifest::Manifest, Failure> {
    manifest::load(file, namespace).map_err(|errors| Failure::usage(errors.to_string()))
}

pub async fn apply(file: &Path, namespace: Option<String>, wait: bool) -> CliResult {
    // Validate locally first: bad input is reported even with no cluster running.
    let (config, namespace) = settings(namespace)?;
    let manifest = load_manifest(file, &namespace)?;
    let client = client_of(config)?;
    apply_manifest(&client, &manifest).await?;
    if wait {
        wait_for_rollout(&client, &manifest, Duration::from_secs(300)).await?;
    }
    Ok(())
}

/// Uploads the manifest's components that the cluster lacks, then applies its objects.
pub async fn apply_manifest(client: &Client, manifest: &manifest::Manifest) -> CliResult {
    for component in &manifest.components {
        // Each namespace that runs it must hold it: a tenant's pods run only
        // components uploaded to the tenant.
        let mut namespaces: Vec<&str> = manifest
            .objects
            .iter()
            .filter(|o| {
                o.spec
                    .pointer("/template/component")
                    .and_then(|c| c.as_str())
                    == Some(component.digest.as_str())
            })
            .map(|o| o.namespace())
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        for namespace in namespaces {
            if client.blob_exists(&component.digest, namespace).await? {
                continue;
            }
            client
                .put_blob(&component.digest, component.bytes.clone(), namespace)
                .await?;
            println!(
                "blob/{} uploaded ({} bytes, {})",
                &component.digest[..19],
                component.bytes.len(),
                component.path.display()
            );
        }
    }
    let objects = crate::oci::pin_components(&manifest.objects).await?;
    let result = client.apply(&objects).await?;
    for item in &result.items {
        println!(
            "{}/{} {}",
            item.object.kind.singular(),
            item.object.metadata.name,
            item.action
        );
    }
    Ok(())
}

/// Waits until every deployment of the manifest has rolled out.
async fn wait_for_rollout(
    client: &Client,
    manifest: &manifest::Manifest,
    timeout: Duration,
) -> CliResult {
    for d in manifest
        .objects
        .iter()
        .filter(|o| o.kind == Kind::Deployment)
    {
        crate::ops::await_rollout(client, d.namespace(), &d.metadata.name, timeout).await?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct GetArgs {
    kind: String,
    name: Option<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[arg(short, long, default_value = "table")]
    output: Format,
    /// Keep printing changes.
    #[arg(short, long)]
    watch: bool,
    /// Only objects with these labels (k=v,k2=v2).
    #[arg(short = 'l', long)]
    selector: Option<String>,
}

pub async fn get(args: GetArgs) -> CliResult {
    let kind = parse_kind(&args.kind)?;
    let (client, namespace) = connect(args.namespace)?;
    if args.all_namespaces && args.name.is_some() {
        return Err(Failure::usage(
            "error: a NAME is looked up in one namespace: use -n NAMESPACE, not -A",
        ));
    }
    let ns = if args.all_namespaces {
        None
    } else {
        Some(namespace.as_str())
    };
    if let Some(name) = &args.name {
        let obj = client
            .get(kind, ns, name)
            .await
            .map_err(|e| not_found(e, kind, name))?;
        output::print(kind, &[obj], args.output, false, None);
        return Ok(());
    }
    let query: Vec<(&str, &str)> = args
        .selector
        .as_deref()
        .map(|s| ("labels", s))
        .into_iter()
        .collect();
    let list = client.list(kind, ns, &query).await?;
    if args.output == Format::Json && !args.watch {
        output::print_json(&serde_json::json!({
            "items": list.items,
            "resource_version": list.resource_version,
        }));
        return Ok(());
    }
    output::print(kind, &list.items, args.output, args.all_namespaces, None);
    if args.watch {
        let mut stream = Box::pin(
            client
                .watch(kind, ns, list.resource_version, &query)
                .await?,
        );
        while let Some(event) = stream.next().await {
            let event = event?;
            if event.kind == WatchEventType::Bookmark {
                continue;
            }
            if let Ok(obj) = serde_json::from_value::<RawObject>(event.object) {
                output::print(
                    kind,
                    &[obj],
                    args.output,
                    args.all_namespaces,
                    Some(event.kind),
                );
            }
        }
    }
    Ok(())
}

/// `KIND "NAME" not found`, exit 1, as DESIGN §5 asks.
pub fn not_found(e: ClientError, kind: Kind, name: &str) -> Failure {
    if e.is_not_found() {
        Failure::other(format!("error: {} {name:?} not found", kind.singular()))
    } else {
        e.into()
    }
}

pub async fn describe(kind: &str, name: &str, namespace: Option<String>) -> CliResult {
    let kind = parse_kind(kind)?;
    let (client, namespace) = connect(namespace)?;
    let obj = client
        .get(kind, Some(&namespace), name)
        .await
        .map_err(|e| not_found(e, kind, name))?;
    print!(
        "{}",
        shown(&output::to_yaml(
            &serde_json::to_value(&obj).unwrap_or_default()
        ))
    );
    let events_ns = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    let events = client.list(Kind::Event, Some(&events_ns), &[]).await?;
    let mut related: Vec<Event> = events
        .items
        .into_iter()
        .filter_map(|e| e.typed().ok())
        .filter(|e: &Event| e.spec.involved.kind == kind && e.spec.involved.name == name)
        .collect();
    related.sort_by(|a, b| a.spec.last_seen.cmp(&b.spec.last_seen));
    println!("events:");
    if related.is_empty() {
        println!("  <none>");
    }
    for e in related {
        let line = format!(
            "  {}  {} (x{}): {}",
            e.spec.last_seen.unwrap_or_default(),
            e.spec.reason,
            e.spec.count,
            e.spec.message
        );
        println!("{}", shown(&line));
    }
    Ok(())
}

pub async fn delete(
    kind: Option<String>,
    name: Option<String>,
    file: Option<PathBuf>,
    namespace: Option<String>,
) -> CliResult {
    let (client, namespace) = connect(namespace)?;
    let targets: Vec<(Kind, Option<String>, String)> = match (file, kind, name) {
        (Some(file), _, _) => manifest::load_with(&file, &namespace, manifest::Components::Skip)
            .map_err(|errors| Failure::usage(errors.to_string()))?
            .objects
            .into_iter()
            .map(|o| (o.kind, o.metadata.namespace, o.metadata.name))
            .collect(),
        (None, Some(kind), Some(name)) => {
            let kind = parse_kind(&kind)?;
            vec![(kind, Some(namespace.clone()), name)]
        }
        _ => {
            return Err(Failure::usage(
                "error: give KIND NAME or -f FILE (e.g. `reef delete deployment hello`)",
            ))
        }
    };
    let several = targets.len() > 1;
    let mut failure = None;
    for (kind, ns, name) in targets {
        match client.delete(kind, ns.as_deref(), &name).await {
            Ok(_) => println!("{}/{name} deleted", kind.singular()),
            Err(e) => {
                let f = not_found(e, kind, &name);
                if several {
                    eprintln!("{}", f.message);
                }
                failure = Some(f);
            }
        }
    }
    match failure {
        Some(f) if several => Err(Failure {
            code: f.code,
            message: "error: some objects were not deleted".into(),
        }),
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Prints a pod's output as the node keeps it; with `follow`, goes on until the
/// pod goes or the user interrupts.
pub async fn logs(pod: &str, namespace: Option<String>, follow: bool, previous: bool) -> CliResult {
    use tokio::io::AsyncWriteExt as _;
    let (client, namespace) = connect(namespace)?;
    let mut stream = Box::pin(client.logs(&namespace, pod, follow, previous).await?);
    let mut out = tokio::io::stdout();
    // On a terminal, the guest's control characters are shown, not obeyed.
    let mut escaper = std::io::IsTerminal::is_terminal(&std::io::stdout())
        .then(crate::terminal::Escaper::default);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let chunk = match escaper.as_mut() {
            Some(escaper) => escaper.escape(&chunk).into(),
            None => chunk,
        };
        // A closed stdout (`| head`) ends the command quietly.
        if out.write_all(&chunk).await.is_err() || out.flush().await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}
