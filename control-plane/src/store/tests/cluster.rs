//! Three members over real HTTP on loopback: learners join after the log was
//! compacted (so they catch up from a snapshot), become voters, replicate a
//! write, and elect a new leader when the first one stops.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{config, ops, put, SECRET, WAIT};
use crate::store::{Node, Op, Store};

struct Member {
    store: Arc<Store>,
    addr: String,
    server: JoinHandle<()>,
}

async fn start(id: u64, root: &Path) -> anyhow::Result<Member> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let mut cfg = config(id, root, &addr);
    cfg.snapshot_every = 20;
    cfg.keep_logs = 0;
    let store = Store::open(cfg).await?;
    let app = store.raft_router();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Member {
        store,
        addr,
        server,
    })
}

async fn caught_up(member: &Member, index: u64) -> anyhow::Result<()> {
    member
        .store
        .wait_for_revision(index, WAIT)
        .await
        .with_context(|| format!("member {} applying {index}", member.store.id()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_over_http() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let m1 = start(1, dir.path()).await?;
    m1.store.initialize_single().await?;

    // Enough history that the log is compacted before anyone joins.
    let blob: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 253) as u8).collect();
    m1.store
        .txn(ops(vec![Op::PutBlobChunk {
            digest: "sha256:c0ffee".into(),
            offset: 0,
            data: blob.clone(),
        }]))
        .await?;
    for i in 0..40 {
        m1.store
            .txn(ops(vec![put(&format!("n/{i:02}"), "v")]))
            .await?;
    }
    m1.store
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some(), "leader purged its log")
        .await?;

    // The Raft routes refuse callers without the member secret.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{}/raft/vote", m1.addr);
    let anonymous = http.post(&url).body(vec![0x80]).send().await?;
    ensure!(anonymous.status() == reqwest::StatusCode::UNAUTHORIZED);
    let wrong = http
        .post(&url)
        .bearer_auth("nope")
        .body(vec![0x80])
        .send()
        .await?;
    ensure!(wrong.status() == reqwest::StatusCode::UNAUTHORIZED);
    let garbage = http
        .post(&url)
        .bearer_auth(SECRET)
        .body(vec![0xc1])
        .send()
        .await?;
    ensure!(garbage.status() == reqwest::StatusCode::BAD_REQUEST);
    // A snapshot is refused before its body is read without the secret, and
    // with it when its head is over the limit or undecodable.
    let snapshot_url = format!("http://{}/raft/snapshot", m1.addr);
    let anonymous = http.post(&snapshot_url).body(vec![0; 16]).send().await?;
    ensure!(anonymous.status() == reqwest::StatusCode::UNAUTHORIZED);
    for head in [u32::MAX.to_be_bytes().to_vec(), vec![0, 0, 0, 1, 0xc1]] {
        let refused = http
            .post(&snapshot_url)
            .bearer_auth(SECRET)
            .body(head)
            .send()
            .await?;
        ensure!(refused.status() == reqwest::StatusCode::BAD_REQUEST);
    }

    let m2 = start(2, dir.path()).await?;
    let m3 = start(3, dir.path()).await?;
    let raft = m1.store.raft();
    for m in [&m2, &m3] {
        let node = Node {
            addr: m.addr.clone(),
        };
        raft.add_learner(m.store.id(), node, true).await?;
    }
    let joined_at = m1.store.revision();
    for m in [&m2, &m3] {
        caught_up(m, joined_at).await?;
        let snapshot = m.store.raft().metrics().borrow_watched().snapshot;
        ensure!(
            snapshot.is_some(),
            "member {} caught up from a snapshot",
            m.store.id()
        );
    }
    raft.change_membership(BTreeSet::from([1, 2, 3]), false)
        .await?;

    let write = m1
        .store
        .txn(ops(vec![put("replicated", "everywhere")]))
        .await?;
    for m in [&m1, &m2, &m3] {
        caught_up(m, write.revision).await?;
        let kv = m.store.get("replicated")?.context("replicated key")?;
        ensure!(kv.value == b"everywhere" && kv.mod_revision == write.revision);
        ensure!(m.store.range("n/")?.0.len() == 40);
        ensure!(m.store.read_blob("sha256:c0ffee")?.as_deref() == Some(&blob[..]));
        ensure!(m.store.leader_id() == Some(1));
    }
    ensure!(m1.store.is_leader() && !m2.store.is_leader());

    // Concurrent large chunks batch into AppendEntries bigger than the byte
    // budget; replication must split them rather than time out forever.
    let big: Vec<u8> = (0..1536 * 1024u32).map(|i| (i % 241) as u8).collect();
    let writes = (0..3u64).map(|i| {
        m1.store.txn(ops(vec![Op::PutBlobChunk {
            digest: "sha256:big".into(),
            offset: i * big.len() as u64,
            data: big.clone(),
        }]))
    });
    let outcomes = futures::future::try_join_all(writes).await?;
    let last = outcomes
        .iter()
        .map(|o| o.revision)
        .max()
        .unwrap_or_default();
    for m in [&m2, &m3] {
        caught_up(m, last).await?;
        ensure!(m.store.blob_size("sha256:big")? == Some(3 * big.len() as u64));
    }
    // Followers serve linearizable reads through the leader's read index.
    m2.store.read_barrier().await?;

    // The leader stops (and its port closes); the other two elect one of them.
    m1.store.shutdown().await?;
    m1.server.abort();
    let metrics = m2
        .store
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| matches!(m.current_leader, Some(2 | 3)), "a new leader")
        .await?;
    let (leader, follower) = if metrics.current_leader == Some(2) {
        (&m2, &m3)
    } else {
        (&m3, &m2)
    };
    let after = leader
        .store
        .txn(ops(vec![put("after-failover", "ok")]))
        .await?;
    ensure!(after.succeeded);
    caught_up(follower, after.revision).await?;
    ensure!(follower.store.get("after-failover")?.is_some());

    for m in [m2, m3] {
        m.store.shutdown().await?;
        m.server.abort();
    }
    Ok(())
}
