//! The replicated store is linearizable under a leader kill, and steady load
//! does not cause elections: real `reef control-plane` processes, clients on
//! every member recording what they did, a checker over the history.

mod common;

#[path = "checker/linearizability.rs"]
mod checker;

use checker::{Action, Operation};
use common::control_plane::ControlPlane;
use common::eventually;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 3;
const CLIENTS: usize = 6;

/// A register: the Service `lin-{key}`, its value in a label.
fn service(key: usize, value: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Service",
        "metadata": {"name": format!("lin-{key}"), "namespace": "default", "labels": {"v": value}},
        "spec": {"selector": {"app": "lin"}},
    })
}

/// One client bound to one member, without retries (a retried write could
/// land twice): every answer that is not a success leaves a write unknown.
async fn client(
    index: usize,
    url: String,
    token: String,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Operation> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let now = || epoch.elapsed().as_micros() as u64;
    let mut history = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = (seq as usize * 7 + index) % KEYS;
        let path = format!("{url}/api/v1/namespaces/default/services/lin-{key}");
        let write = seq % 2 == 0;
        let call = now();
        if write {
            let value = format!("c{index}-{seq}");
            let answer = http
                .put(&path)
                .bearer_auth(&token)
                .json(&service(key, &value))
                .send()
                .await;
            // Not sent, or refused before it was proposed (503): it did not
            // happen. Anything else but a success: it may have.
            let outcome = match answer {
                Ok(r) if r.status().is_success() => Some(true),
                Ok(r) if r.status() == 503 => None,
                Err(e) if e.is_connect() => None,
                _ => Some(false),
            };
            if let Some(ok) = outcome {
                history.push(Operation {
                    client: index,
                    key: key.to_string(),
                    action: Action::Write(value),
                    call,
                    ret: ok.then(now),
                });
            }
            if outcome != Some(true) {
                // A member that is down answers at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            let answer = http.get(&path).bearer_auth(&token).send().await;
            let value = match answer {
                Ok(r) if r.status() == 404 => Some(None),
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .map(|obj| obj["metadata"]["labels"]["v"].as_str().map(String::from)),
                _ => None,
            };
            match value {
                Some(seen) => history.push(Operation {
                    client: index,
                    key: key.to_string(),
                    action: Action::Read(seen),
                    call,
                    ret: Some(now()),
                }),
                // A failed read has no effect: left out.
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    history
}

fn count(history: &[Operation], after: u64, ok: bool) -> usize {
    history
        .iter()
        .filter(|op| op.call >= after && op.ret.is_some() == ok)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_writes_stay_linearizable_when_the_leader_is_killed() {
    let mut cp = ControlPlane::start(3, &[]).await;
    let token = cp.admin_token();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = cp.members[i % 3].url();
            tokio::spawn(client(i, url, token.clone(), epoch, stop.clone()))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(4)).await;
    let leader = cp.leader().await;
    let killed_at = epoch.elapsed().as_micros() as u64;
    cp.kill(leader);
    let new_leader = cp.leader().await;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cp.launch(leader);
    cp.wait_ready(leader).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let mut history = Vec::new();
    for c in clients {
        history.extend(c.await.expect("client task"));
    }
    let (ok_after, unknown) = (count(&history, killed_at, true), count(&history, 0, false));
    assert!(
        ok_after > 100,
        "the cluster kept answering after the kill ({ok_after} operations)"
    );
    println!(
        "history: {} operations, {unknown} writes of unknown outcome, {ok_after} completed after the kill",
        history.len()
    );
    if let Err(violation) = checker::check(&history) {
        let mut key_ops: Vec<_> = history
            .iter()
            .filter(|op| op.key == violation.key)
            .collect();
        key_ops.sort_by_key(|op| op.call);
        let lines: Vec<String> = key_ops
            .iter()
            .map(|op| {
                format!(
                    "client {} {:?} at {}..{:?}",
                    op.client, op.action, op.call, op.ret
                )
            })
            .collect();
        panic!("{violation}:\n{}\n{}", lines.join("\n"), cp.log_tail());
    }

    // The checker is not vacuous: a read appended after two acknowledged,
    // sequential writes that returns the first one's value is caught.
    let planted = plant_stale_read(&history).expect("two sequential acknowledged writes");
    assert!(
        checker::check(&planted).is_err(),
        "a planted stale read went unnoticed"
    );
}

/// The history plus a read, after everything, of a value that was
/// overwritten by a later acknowledged write.
fn plant_stale_read(history: &[Operation]) -> Option<Vec<Operation>> {
    let acked: Vec<&Operation> = history
        .iter()
        .filter(|op| op.ret.is_some() && matches!(op.action, Action::Write(_)))
        .collect();
    let (first, _) = acked.iter().find_map(|a| {
        acked
            .iter()
            .find(|b| b.key == a.key && b.call > a.ret.unwrap_or(u64::MAX))
            .map(|b| (*a, *b))
    })?;
    let Action::Write(old) = &first.action else {
        return None;
    };
    let end = history.iter().filter_map(|op| op.ret).max()? + 1;
    let mut planted = history.to_vec();
    planted.push(Operation {
        client: usize::MAX,
        key: first.key.clone(),
        action: Action::Read(Some(old.clone())),
        call: end,
        ret: Some(end + 1),
    });
    Some(planted)
}

fn term(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("reef_store_term "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steady_writes_from_sixteen_clients_cause_no_election() {
    let cp = ControlPlane::start(3, &[]).await;
    let leader = cp.leader().await;
    let term_before = eventually("the leader's term", Duration::from_secs(30), || async {
        term(&cp.metrics(leader).await?)
    })
    .await;
    let token = cp.admin_token();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let (url, token, stop) = (cp.members[i % 3].url(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let body = service(i, &format!("w{i}-{seq}"));
                    let name = format!("steady-{i}-{}", seq % 50);
                    let answer = http
                        .put(format!("{url}/api/v1/namespaces/default/services/{name}"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({
                            "kind": "Service",
                            "metadata": {"name": name, "namespace": "default"},
                            "spec": body["spec"],
                        }))
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().is_success() => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for w in writers {
        let (o, f) = w.await.expect("writer");
        ok += o;
        failed += f;
    }
    let after = cp.leader().await;
    let term_after = term(&cp.metrics(after).await.expect("metrics")).expect("term");
    println!(
        "{ok} writes in 30 s from 16 clients, {failed} failed; term {term_before} -> {term_after}"
    );
    assert_eq!(after, leader, "the leader changed under load");
    assert_eq!(
        term_after,
        term_before,
        "an election happened under load\n{}",
        cp.log_tail()
    );
    assert_eq!(failed, 0, "writes failed under steady load");
    assert!(ok > 1000, "the load was real ({ok} writes)");
}
