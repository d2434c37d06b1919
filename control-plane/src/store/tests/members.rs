//! Multi-member behaviour over real HTTP: writes and linearizable reads on
//! followers, joining by snapshot (also concurrently), removal, failover,
//! failing without a quorum, and a member that lost its data coming back.

use openraft::async_runtime::WatchReceiver;
use std::time::Duration;

use anyhow::{ensure, Context};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::harness::{cluster, leader_of, start, start_on, Member};
use super::{ops, put, single, SECRET, WAIT};
use crate::store::{Check, MemberInfo, MemberRole, Op, StoreError, Txn};

/// What a call that must fail without a quorum may take: the request
/// timeout (3 × election_max = 6 s by default) plus slack for a loaded box.
const FAIL_WITHIN: Duration = Duration::from_secs(15);

async fn stop_all(members: Vec<Member>) -> anyhow::Result<()> {
    for m in members {
        m.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_writes_and_serve_linearizable_reads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let members = cluster(dir.path(), 2).await?;
    let l = leader_of(&members).await?;
    ensure!(members[l].id() == 1);
    let (f1, f2) = (&members[1], &members[2]);

    // A write through a follower, then read back from that follower at once.
    let written = f1.store.txn(ops(vec![put("via-follower", "1")])).await?;
    ensure!(written.succeeded);
    let kv = f1.store.get("via-follower")?.context("own write visible")?;
    ensure!(kv.value == b"1" && kv.mod_revision == written.revision);

    // Compare-and-swap through a follower: the checks run on the leader.
    let stale = Txn {
        checks: vec![Check::ModRevision {
            key: "via-follower".into(),
            revision: written.revision - 1,
        }],
        ops: vec![put("via-follower", "clobbered")],
    };
    let refused = f2.store.txn(stale).await?;
    ensure!(!refused.succeeded && refused.failed_check == Some(0));
    let fresh = Txn {
        checks: vec![Check::ModRevision {
            key: "via-follower".into(),
            revision: written.revision,
        }],
        ops: vec![put("via-follower", "2")],
    };
    let swapped = f2.store.txn(fresh).await?;
    ensure!(swapped.succeeded && swapped.revision > refused.revision);
    ensure!(f2.store.get("via-follower")?.map(|kv| kv.value) == Some(b"2".to_vec()));

    // A write on the leader is visible on a follower after a read barrier.
    for i in 0..20 {
        let w = members[l]
            .store
            .txn(ops(vec![put("on-leader", &i.to_string())]))
            .await?;
        for f in [f1, f2] {
            f.store.read_barrier().await?;
            ensure!(f.store.revision() >= w.revision);
            let kv = f.store.get("on-leader")?.context("leader's write")?;
            ensure!(kv.value == i.to_string().as_bytes() && kv.mod_revision == w.revision);
        }
    }
    members[l].store.read_barrier().await?;

    // The new member RPCs want the member secret too.
    let http = reqwest::Client::builder().no_proxy().build()?;
    for path in ["/raft/txn", "/raft/read-index", "/raft/add-member"] {
        let url = format!("http://{}{path}", members[l].addr);
        let anonymous = http.post(&url).body(vec![0x80]).send().await?;
        ensure!(
            anonymous.status() == reqwest::StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let status = http
        .get(format!("http://{}/raft/status", f1.addr))
        .bearer_auth(SECRET)
        .send()
        .await?;
    ensure!(status.status().is_success());

    // The leader alone (both followers stopped) acknowledges nothing.
    let mut members = members;
    let leader = members.remove(l);
    stop_all(members).await?;
    let started = Instant::now();
    let write = leader.store.txn(ops(vec![put("lost", "x")])).await;
    ensure!(
        matches!(
            write,
            Err(StoreError::Timeout(_) | StoreError::NotLeader { .. })
        ),
        "a lone leader's write: {write:?}"
    );
    let read = leader.store.read_barrier().await;
    ensure!(
        matches!(
            read,
            Err(StoreError::Timeout(_) | StoreError::NotLeader { .. })
        ),
        "a lone leader's read barrier: {read:?}"
    );
    ensure!(
        started.elapsed() < FAIL_WITHIN * 2,
        "took {:?}",
        started.elapsed()
    );
    leader.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_by_snapshot_and_leave() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let m1 = start(1, dir.path()).await?;
    m1.store.initialize_single().await?;
    ensure!(m1.store.is_initialized());

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

    let m2 = start(2, dir.path()).await?;
    ensure!(!m2.store.is_initialized());
    m1.store.add_member(2, m2.addr.clone()).await?;
    ensure!(m2.store.is_initialized());
    ensure!(
        m2.store
            .raft()
            .metrics()
            .borrow_watched()
            .snapshot
            .is_some(),
        "member 2 caught up from a snapshot"
    );
    m2.sees_voters(2).await?;
    ensure!(
        m1.store.members()
            == vec![
                MemberInfo {
                    id: 1,
                    address: m1.addr.clone(),
                    role: MemberRole::Leader
                },
                MemberInfo {
                    id: 2,
                    address: m2.addr.clone(),
                    role: MemberRole::Follower
                },
            ]
    );

    // Adding a voter again is a no-op; another address for it is refused,
    // and so is an id the member at the address does not have.
    m2.store.add_member(2, m2.addr.clone()).await?;
    let moved = m1.store.add_member(2, "127.0.0.1:9".into()).await;
    ensure!(matches!(moved, Err(StoreError::Refused(_))), "{moved:?}");
    let wrong_id = m1.store.add_member(5, m2.addr.clone()).await;
    ensure!(
        matches!(wrong_id, Err(StoreError::Refused(_))),
        "{wrong_id:?}"
    );

    // Two members join at the same time, one through a follower.
    let m3 = start(3, dir.path()).await?;
    let m4 = start(4, dir.path()).await?;
    let (r3, r4) = tokio::join!(
        m2.store.add_member(3, m3.addr.clone()),
        m1.store.add_member(4, m4.addr.clone()),
    );
    r3.context("adding member 3 through member 2")?;
    r4.context("adding member 4 through member 1")?;
    let members = vec![m1, m2, m3, m4];
    for m in &members {
        m.sees_voters(4).await?;
    }
    let roles: Vec<(u64, MemberRole)> = members[3]
        .store
        .members()
        .iter()
        .map(|m| (m.id, m.role))
        .collect();
    ensure!(
        roles
            == [
                (1, MemberRole::Leader),
                (2, MemberRole::Follower),
                (3, MemberRole::Follower),
                (4, MemberRole::Follower)
            ],
        "{roles:?}"
    );
    let last = members[0].store.revision();
    for m in &members[2..] {
        m.caught_up(last).await?;
        ensure!(m.store.raft().metrics().borrow_watched().snapshot.is_some());
        ensure!(m.store.range("n/")?.0.len() == 40);
        ensure!(m.store.read_blob("sha256:c0ffee")?.as_deref() == Some(&blob[..]));
    }

    // Remove member 4 through member 3; removing it again is a no-op.
    members[2].store.remove_member(4).await?;
    members[2].store.remove_member(4).await?;
    let mut members = members;
    members.pop().context("m4")?.stop().await?;
    for m in &members {
        m.sees_voters(3).await?;
    }
    let w = members[1]
        .store
        .txn(ops(vec![put("after-remove", "ok")]))
        .await?;
    ensure!(w.succeeded);

    // Remove the leader itself: the others elect one of them.
    members[1].store.remove_member(1).await?;
    let m1 = members.remove(0);
    let l = leader_of(&members).await?;
    for m in &members {
        m.sees_voters(2).await?;
    }
    let follower = &members[1 - l];
    let w = follower
        .store
        .txn(ops(vec![put("after-leader-left", "ok")]))
        .await?;
    ensure!(w.succeeded && follower.store.get("after-leader-left")?.is_some());
    m1.stop().await?;
    stop_all(members).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_voter_cannot_be_removed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = single(dir.path()).await?;
    let refused = store.remove_member(1).await;
    ensure!(
        matches!(refused, Err(StoreError::Refused(_))),
        "{refused:?}"
    );
    store.remove_member(42).await?; // not a member: nothing to do
    ensure!(store.members().len() == 1);
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_then_a_lone_member_fails_fast() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut members = cluster(dir.path(), 2).await?;
    let before = members[1].store.txn(ops(vec![put("before", "1")])).await?;

    // The leader stops; the other two elect a leader; writes through the
    // follower resume.
    let l = leader_of(&members).await?;
    members.remove(l).stop().await?;
    let l = leader_of(&members).await?;
    let follower = &members[1 - l];
    let after = follower.store.txn(ops(vec![put("after", "2")])).await?;
    ensure!(after.succeeded && after.revision > before.revision);
    ensure!(follower.store.get("after")?.is_some() && follower.store.get("before")?.is_some());
    follower.store.read_barrier().await?;

    // Now the new leader stops too: the follower, alone, must fail rather
    // than hang or pretend.
    let leader = members.remove(l);
    leader.stop().await?;
    let lone = members.pop().context("lone member")?;
    let started = Instant::now();
    let write = lone.store.txn(ops(vec![put("lost", "x")])).await;
    ensure!(
        matches!(
            write,
            Err(StoreError::Timeout(_) | StoreError::NotLeader { .. })
        ),
        "a lone follower's write: {write:?}"
    );
    ensure!(
        started.elapsed() < FAIL_WITHIN,
        "took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let read = lone.store.read_barrier().await;
    ensure!(
        matches!(
            read,
            Err(StoreError::Timeout(_) | StoreError::NotLeader { .. })
        ),
        "a lone follower's read barrier: {read:?}"
    );
    ensure!(
        started.elapsed() < FAIL_WITHIN,
        "took {:?}",
        started.elapsed()
    );
    ensure!(lone.store.get("lost")?.is_none());
    lone.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_rejoins_without_harm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut members = cluster(dir.path(), 2).await?;
    for i in 0..30 {
        members[0]
            .store
            .txn(ops(vec![put(&format!("k/{i:02}"), "v")]))
            .await?;
    }

    // Member 3 stops, loses its data dir, and comes back at the same address.
    let m3 = members.pop().context("m3")?;
    let addr = m3.addr.clone();
    m3.stop().await?;
    std::fs::remove_dir_all(dir.path().join("member-3"))?;
    let listener = TcpListener::bind(&addr).await?;
    let m3 = start_on(3, dir.path(), listener, |_| {}).await?;
    ensure!(!m3.store.is_initialized());

    // The leader keeps working (no panic), re-adding member 3 is accepted,
    // and member 3 ends up a voter with all the data.
    let w = members[1].store.txn(ops(vec![put("during", "1")])).await?;
    ensure!(w.succeeded);
    members[1].store.add_member(3, addr).await?;
    members.push(m3);
    for m in &members {
        m.sees_voters(3).await?;
    }
    let last = members[0].store.txn(ops(vec![put("after", "1")])).await?;
    members[2].caught_up(last.revision).await?;
    ensure!(members[2].store.range("k/")?.0.len() == 30);
    ensure!(members[2].store.get("during")?.is_some());
    ensure!(members[0]
        .store
        .raft()
        .metrics()
        .borrow_watched()
        .running_state
        .is_ok());
    stop_all(members).await
}
