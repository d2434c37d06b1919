//! Members on real HTTP (port 0 on loopback) for the multi-member tests.
//! Stopping a member closes its server gracefully, so no kept-alive
//! connection outlives it (as when a process exits).

use openraft::async_runtime::WatchReceiver;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{config, WAIT};
use crate::store::{MemberRole, Store, StoreConfig};

pub(super) struct Member {
    pub store: Arc<Store>,
    pub addr: String,
    server: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

/// Snapshots every 20 entries with no log kept behind them, so joining
/// members catch up by snapshot.
pub(super) fn compacting(cfg: &mut StoreConfig) {
    cfg.snapshot_every = 20;
    cfg.keep_logs = 0;
}

/// Starts member `id` (data in `root/member-{id}`) on `listener`.
pub(super) async fn start_on(
    id: u64,
    root: &Path,
    listener: TcpListener,
    tweak: impl FnOnce(&mut StoreConfig),
) -> anyhow::Result<Member> {
    let addr = listener.local_addr()?.to_string();
    let mut cfg = config(id, root, &addr);
    compacting(&mut cfg);
    tweak(&mut cfg);
    let store = Store::open(cfg).await?;
    let app = store.raft_router();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Member {
        store,
        addr,
        server,
        stop,
    })
}

pub(super) async fn start(id: u64, root: &Path) -> anyhow::Result<Member> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    start_on(id, root, listener, |_| {}).await
}

impl Member {
    pub fn id(&self) -> u64 {
        self.store.id()
    }

    /// Shuts the store down and closes the server and its connections.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.store.shutdown().await?;
        let _ = self.stop.send(());
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(10), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        Ok(())
    }

    /// Waits until this member has applied `index`.
    pub async fn caught_up(&self, index: u64) -> anyhow::Result<()> {
        self.store
            .wait_for_revision(index, WAIT)
            .await
            .with_context(|| format!("member {} applying {index}", self.id()))?;
        Ok(())
    }

    /// Waits until this member sees `voters` voters, one of which leads.
    pub async fn sees_voters(&self, voters: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let members = self.store.members();
            let voting = members
                .iter()
                .filter(|m| m.role != MemberRole::Learner)
                .count();
            let leaders = members
                .iter()
                .filter(|m| m.role == MemberRole::Leader)
                .count();
            if voting == voters && leaders == 1 && members.len() == voters {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "member {} sees {members:?}, not {voters} voters with a leader",
                self.id()
            );
            let mut rx = self.store.raft().metrics();
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
    }
}

/// A leading first member plus `more` members added through `add_member`.
pub(super) async fn cluster(root: &Path, more: u64) -> anyhow::Result<Vec<Member>> {
    let first = start(1, root).await?;
    first.store.initialize_single().await?;
    let mut members = vec![first];
    for id in 2..=more + 1 {
        let m = start(id, root).await?;
        members[0].store.add_member(id, m.addr.clone()).await?;
        members.push(m);
    }
    for m in &members {
        m.sees_voters(members.len()).await?;
    }
    Ok(members)
}

/// The index in `members` of the one `members[i]` sees leading, waiting
/// for a leader among them.
pub(super) async fn leader_of(members: &[Member]) -> anyhow::Result<usize> {
    let ids: Vec<u64> = members.iter().map(Member::id).collect();
    let metrics = members[0]
        .store
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| ids.contains(&l)),
            "a leader among the running members",
        )
        .await?;
    let leader = metrics.current_leader.context("leader")?;
    let at = ids.iter().position(|&id| id == leader).context("leader")?;
    // The leader itself must know it leads.
    members[at]
        .store
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader == Some(leader), "leader knows")
        .await?;
    Ok(at)
}
