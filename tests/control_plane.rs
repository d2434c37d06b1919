//! The replicated control plane with real processes on loopback: leader loss under
//! writes, full restarts, catching up by snapshot, backup and restore, five
//! members with two down, and reading one's own writes from another member.

mod common;

use common::control_plane::{free_port, metric, service, ControlPlane};
use common::*;
use reef_api::{Client, Kind};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SLOW: Duration = Duration::from_secs(120);

/// Writes services named `{prefix}-{i}` until told to stop; returns those
/// acknowledged, with the revision each was acknowledged at.
fn spawn_writer(
    client: Client,
    prefix: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<String, u64>> {
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut acked = BTreeMap::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let name = format!("{prefix}-{i}");
            if let Ok(obj) = client.put(&service(&name), false).await {
                acked.insert(name, obj.metadata.resource_version);
            }
            i += 1;
        }
        acked
    })
}

/// Every acknowledged write is readable from this member, at the same revision.
async fn assert_has_all(client: &Client, acked: &BTreeMap<String, u64>, who: &str) {
    let list = client
        .list(Kind::Service, Some("default"), &[])
        .await
        .expect("list services");
    let stored: BTreeMap<String, u64> = list
        .items
        .iter()
        .map(|o| (o.metadata.name.clone(), o.metadata.resource_version))
        .collect();
    for (name, rv) in acked {
        assert_eq!(
            stored.get(name),
            Some(rv),
            "{who} lost or changed acknowledged write {name}"
        );
    }
}

async fn wait_until_acked(count: &AtomicUsize, at_least: usize, what: &str) {
    eventually(what, SLOW, || {
        let n = count.load(Ordering::Relaxed);
        async move { (n >= at_least).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_writes_loses_nothing_and_pods_keep_serving() {
    let app = example("hello");
    let mut cp = ControlPlane::start(3, &[]).await;
    cp.start_node().await;
    let out = cp.reef(&["apply", "-f", path_str(&app)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ingress = cp.ingress.clone().expect("ingress");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http");
    eventually("hello to answer through the node", SLOW, || async {
        let r = http
            .get(format!("http://{ingress}/"))
            .header("host", "hello.local")
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // Requests through the node proxy the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let requests = {
        let (stop, ok, failed, http, ingress) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            http.clone(),
            ingress.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = http
                    .get(format!("http://{ingress}/"))
                    .header("host", "hello.local")
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    // Writes through a client that knows every member.
    let acked_count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (client, stop, acked_count) = (cp.client(), stop.clone(), acked_count.clone());
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w-{i}");
                if let Ok(obj) = client.put(&service(&name), false).await {
                    acked.insert(name, obj.metadata.resource_version);
                    acked_count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            acked
        })
    };
    wait_until_acked(&acked_count, 20, "writes before the kill").await;

    let leader = cp.leader().await;
    let old_leader_id = cp.members[leader].id;
    cp.kill(leader);
    let before = acked_count.load(Ordering::Relaxed);
    let new_leader = cp.leader().await;
    assert_ne!(cp.members[new_leader].id, old_leader_id);
    wait_until_acked(
        &acked_count,
        before + 20,
        "writes to resume on the new leader",
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    requests.await.expect("request loop");
    for i in 0..cp.members.len() {
        if cp.members[i].is_running() {
            assert_has_all(
                &cp.client_of(i),
                &acked,
                &format!("member {}", cp.members[i].id),
            )
            .await;
        }
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 0, "no request answered");
    assert_eq!(
        failed, 0,
        "requests failed while the control plane lost its leader ({ok} ok)"
    );

    // The new leader's controllers took over from the store: the deployment has
    // exactly its 2 pods (nothing created twice), and a pod deleted now is replaced.
    let client = cp.client();
    let hello_pods = || async {
        let list = client.list(Kind::Pod, Some("default"), &[]).await.ok()?;
        let names: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.name.starts_with("hello-"))
            .map(|p| p.metadata.name.clone())
            .collect();
        Some(names)
    };
    let before = hello_pods().await.expect("pods");
    assert_eq!(before.len(), 2, "after the failover: {before:?}");
    client
        .delete(Kind::Pod, Some("default"), &before[0])
        .await
        .expect("delete a pod");
    let after = eventually(
        "the new leader to replace the deleted pod",
        SLOW,
        || async {
            let names = hello_pods().await?;
            (names.len() == 2 && !names.contains(&before[0])).then_some(names)
        },
    )
    .await;
    assert!(
        after.contains(&before[1]),
        "the other pod was kept: {after:?}"
    );

    // The killed member comes back as a follower with everything.
    cp.launch(leader);
    cp.wait_ready(leader).await;
    eventually("the old leader to catch up", SLOW, || async {
        let list = cp
            .client_of(leader)
            .list(Kind::Service, Some("default"), &[])
            .await
            .ok()?;
        (list.items.len() > acked.len()).then_some(())
    })
    .await;
    assert_has_all(&cp.client_of(leader), &acked, "the restarted old leader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_members_killed_and_restarted_keep_everything() {
    let mut cp = ControlPlane::start(3, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(cp.client(), "k", stop.clone());
    eventually("some writes", SLOW, || async {
        let n = cp
            .client()
            .list(Kind::Service, Some("default"), &[])
            .await
            .ok()?
            .items
            .len();
        (n >= 30).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    for i in 0..3 {
        cp.kill(i);
    }
    for i in 0..3 {
        cp.launch(i);
    }
    for i in 0..3 {
        cp.wait_ready(i).await;
    }
    for i in 0..3 {
        assert_has_all(&cp.client_of(i), &acked, &format!("member {}", i + 1)).await;
    }
    let out = cp.reef(&["admin", "members", "-o", "json"]);
    let members: serde_json::Value = serde_json::from_slice(&out.stdout).expect("members json");
    let roles: Vec<&str> = members
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{members}"
    );
    assert_eq!(roles.len(), 3, "{members}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_compaction_catches_up_by_snapshot() {
    let mut cp = ControlPlane::start(3, &["--snapshot-every", "20", "--keep-logs", "10"]).await;
    let leader = cp.leader().await;
    let lagging = (leader + 1) % 3;
    cp.kill(lagging);
    let client = cp.client_of(leader);
    for i in 0..150 {
        client
            .put(&service(&format!("s-{i}")), false)
            .await
            .expect("write");
    }
    // The log the stopped member would need is gone from the leader.
    let purged = eventually("the leader to compact its log", SLOW, || async {
        let text = cp.metrics(leader).await?;
        let purged = metric(&text, "reef_store_purged_index");
        (purged > 100).then_some(purged)
    })
    .await;

    cp.launch(lagging);
    cp.wait_ready(lagging).await;
    let lagging_client = cp.client_of(lagging);
    let list = eventually("the restarted member to serve reads", SLOW, || async {
        lagging_client
            .list(Kind::Service, Some("default"), &[])
            .await
            .ok()
    })
    .await;
    assert_eq!(list.items.len(), 150);
    let metrics = cp.metrics(lagging).await.expect("metrics");
    assert!(
        metric(&metrics, "reef_store_snapshot_index") >= purged,
        "the member must hold a snapshot at least as new as the leader's compaction point:\n{metrics}"
    );
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_writes_restores_the_backup_point() {
    let cp = ControlPlane::start(1, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(cp.client(), "b", stop.clone());
    eventually("some writes", SLOW, || async {
        let n = cp
            .client()
            .list(Kind::Service, Some("default"), &[])
            .await
            .ok()?
            .items
            .len();
        (n >= 20).then_some(())
    })
    .await;
    let backup = cp.home.path().join("cluster.backup");
    let out = cp.reef(&["admin", "backup", path_str(&backup)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let revision: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "revision")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {text}"));
    // Keep writing after the backup point for a while.
    let after = cp
        .client()
        .list(Kind::Service, Some("default"), &[])
        .await
        .expect("list")
        .items
        .len();
    eventually("writes after the backup", SLOW, || async {
        let n = cp
            .client()
            .list(Kind::Service, Some("default"), &[])
            .await
            .ok()?
            .items
            .len();
        (n >= after + 10).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");

    let restored_dir = cp.home.path().join("restored");
    let address = format!("127.0.0.1:{}", free_port());
    let out = cp.reef(&[
        "admin",
        "restore",
        path_str(&backup),
        "--data-dir",
        path_str(&restored_dir),
        "--id",
        "7",
        "--advertise",
        &address,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::File::create(cp.home.path().join("restored.log")).expect("log");
    let _restored = KillOnDrop(
        std::process::Command::new(REEF)
            .args(["control-plane", "--id", "7", "--listen", &address])
            .arg("--data-dir")
            .arg(&restored_dir)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the restored member"),
    );
    let client =
        Client::new(vec![format!("http://{address}")], Some(cp.admin_token())).expect("client");
    let list = eventually("the restored member to serve", SLOW, || async {
        client.list(Kind::Service, Some("default"), &[]).await.ok()
    })
    .await;
    let got: BTreeMap<String, u64> = list
        .items
        .iter()
        .map(|o| (o.metadata.name.clone(), o.metadata.resource_version))
        .collect();
    let expected: BTreeMap<String, u64> = acked
        .into_iter()
        .filter(|(_, rv)| *rv <= revision)
        .collect();
    assert_eq!(
        got, expected,
        "the restored state must equal the acknowledged writes up to revision {revision}"
    );
    let written = client
        .put(&service("after-restore"), false)
        .await
        .expect("write to the restored member");
    assert!(
        written.metadata.resource_version > revision,
        "revisions continue past the backup's"
    );
    let members = client.members().await.expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!((members[0].id, members[0].role.as_str()), (7, "leader"));

    // The restored member has a Raft secret of its own: a member of the old
    // cluster (which holds the old one) cannot speak Raft to it.
    let old_secret =
        std::fs::read_to_string(cp.member_dir(0).join("raft.secret")).expect("old raft.secret");
    let new_secret =
        std::fs::read_to_string(restored_dir.join("raft.secret")).expect("new raft.secret");
    assert_ne!(
        old_secret.trim(),
        new_secret.trim(),
        "restore must mint a new Raft secret"
    );
    let vote = reqwest::Client::new()
        .post(format!("http://{address}/raft/vote"))
        .bearer_auth(old_secret.trim())
        .body(Vec::<u8>::new())
        .send()
        .await
        .expect("POST /raft/vote");
    assert_eq!(
        vote.status().as_u16(),
        401,
        "the old cluster's secret must be refused"
    );

    // A damaged backup is refused and creates nothing.
    let mut bytes = std::fs::read(&backup).expect("backup bytes");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let damaged = cp.home.path().join("damaged.backup");
    std::fs::write(&damaged, bytes).expect("write");
    let target = cp.home.path().join("from-damaged");
    let out = cp.reef(&[
        "admin",
        "restore",
        path_str(&damaged),
        "--data-dir",
        path_str(&target),
    ]);
    assert!(!out.status.success(), "a corrupt backup must be refused");
    assert!(
        !target.join("store").exists()
            || std::fs::read_dir(target.join("store"))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_members_serve_with_two_down() {
    let mut cp = ControlPlane::start(5, &[]).await;
    let leader = cp.leader().await;
    // Take down the leader and one follower.
    let follower = (leader + 1) % 5;
    cp.kill(leader);
    cp.kill(follower);
    let client = cp.client();
    for i in 0..20 {
        client
            .put(&service(&format!("f-{i}")), false)
            .await
            .expect("write with two members down");
    }
    for i in 0..5 {
        if cp.members[i].is_running() {
            let list = cp
                .client_of(i)
                .list(Kind::Service, Some("default"), &[])
                .await
                .expect("read");
            assert_eq!(list.items.len(), 20, "member {}", i + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_on_another_member_see_ones_own_writes() {
    let cp = ControlPlane::start(3, &[]).await;
    for i in 0..30 {
        let (writer, reader) = (i % 3, (i + 1) % 3);
        let name = format!("r-{i}");
        let written = cp
            .client_of(writer)
            .put(&service(&name), false)
            .await
            .expect("write");
        let read = cp
            .client_of(reader)
            .get(Kind::Service, Some("default"), &name)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "member {} did not see {name} written on member {}: {e}",
                    reader + 1,
                    writer + 1
                )
            });
        assert_eq!(
            read.metadata.resource_version,
            written.metadata.resource_version
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_raft_log_stays_bounded_under_steady_writes() {
    let cp = ControlPlane::start(1, &["--snapshot-every", "50", "--keep-logs", "10"]).await;
    let client = cp.client_of(0);
    for round in 0..5 {
        // Overwrite the same 20 objects: the key space stays small, the log keeps growing.
        for k in 0..100 {
            let mut obj = service(&format!("steady-{}", k % 20));
            obj.metadata
                .labels
                .insert("round".into(), format!("{round}-{k}"));
            client.put(&obj, false).await.expect("write");
        }
        let (last, purged) = eventually(
            "the log to be compacted behind the snapshot",
            SLOW,
            || async {
                let text = cp.metrics(0).await?;
                let (last, purged) = (
                    metric(&text, "reef_store_last_log_index"),
                    metric(&text, "reef_store_purged_index"),
                );
                (last - purged <= 50 + 10 + 5).then_some((last, purged))
            },
        )
        .await;
        assert!(
            last >= 100 * (round + 1),
            "every write is a log entry ({last})"
        );
        assert!(purged > 0);
    }
    let snapshots = std::fs::read_dir(cp.members[0].dir.join("store/snapshots"))
        .expect("snapshots dir")
        .count();
    assert!(
        snapshots <= 2,
        "old snapshots are removed ({snapshots} files)"
    );
}
