//! One member, the full Raft path: transactions, watches, blobs, restarts,
//! snapshots.

use anyhow::{ensure, Context};
use tokio::sync::mpsc::error::TryRecvError;

use super::{config, ops, put, single, WAIT};
use crate::store::{Check, EventKind, Op, Store, StoreError, Txn, MAX_TXN_BYTES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compare_and_swap() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = single(dir.path()).await?;
    ensure!(store.is_leader() && store.leader_id() == Some(1));

    let first = store.txn(ops(vec![put("a", "1")])).await?;
    ensure!(first.succeeded && first.failed_check.is_none());
    ensure!(store.revision() == first.revision);
    let a = store.get("a")?.context("a exists")?;
    ensure!(
        a.value == b"1" && a.create_revision == first.revision && a.mod_revision == first.revision
    );

    // Create-only on an existing key fails, applies nothing, takes no revision.
    let create = Txn {
        checks: vec![Check::Absent { key: "a".into() }],
        ops: vec![put("a", "clobbered"), put("side-effect", "x")],
    };
    let refused = store.txn(create).await?;
    ensure!(!refused.succeeded && refused.failed_check == Some(0));
    ensure!(refused.revision == first.revision && store.revision() == first.revision);
    ensure!(store.get("a")?.map(|kv| kv.value) == Some(b"1".to_vec()));
    ensure!(store.get("side-effect")?.is_none());

    // CAS on the current revision succeeds and keeps create_revision.
    let cas = Txn {
        checks: vec![Check::ModRevision {
            key: "a".into(),
            revision: first.revision,
        }],
        ops: vec![put("a", "2")],
    };
    let second = store.txn(cas.clone()).await?;
    ensure!(second.succeeded);
    let a = store.get("a")?.context("a exists")?;
    ensure!(
        a.value == b"2" && a.create_revision == first.revision && a.mod_revision == second.revision
    );

    // The same CAS again is stale; failed_check names the failing check.
    let stale = Txn {
        checks: vec![Check::Absent { key: "b".into() }, cas.checks[0].clone()],
        ops: cas.ops,
    };
    let stale = store.txn(stale).await?;
    ensure!(!stale.succeeded && stale.failed_check == Some(1));

    // revision 0 means "absent", as in etcd; several ops share one revision.
    let multi = Txn {
        checks: vec![Check::ModRevision {
            key: "c".into(),
            revision: 0,
        }],
        ops: vec![
            put("c", "3"),
            put("b", "4"),
            Op::Delete { key: "a".into() },
            Op::Delete {
                key: "never-existed".into(),
            },
            put("c", "5"),
        ],
    };
    let multi = store.txn(multi).await?;
    ensure!(multi.succeeded);
    let (items, revision) = store.range("")?;
    ensure!(revision == multi.revision, "range revision {revision}");
    let keys: Vec<&str> = items.iter().map(|kv| kv.key.as_str()).collect();
    ensure!(keys == ["b", "c"], "keys {keys:?}");
    let c = &items[1];
    ensure!(
        c.value == b"5" && c.create_revision == multi.revision && c.mod_revision == multi.revision
    );

    store.read_barrier().await?;
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_history_then_live() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = single(dir.path()).await?;

    let r1 = store.txn(ops(vec![put("k/a", "a1")])).await?.revision;
    let r2 = store.txn(ops(vec![put("k/b", "b1")])).await?.revision;
    store.txn(ops(vec![put("other/x", "x")])).await?;
    let r4 = store
        .txn(ops(vec![
            Op::Delete { key: "k/a".into() },
            put("k/b", "b2"),
        ]))
        .await?
        .revision;

    let mut rx = store.watch("k/", r1)?;
    let mut all = store.watch("k/", 0)?;
    let e = rx.recv().await.context("event")?;
    ensure!(e.revision == r2 && e.kind == EventKind::Put && e.kv.key == "k/b");
    let e = rx.recv().await.context("event")?;
    ensure!(e.revision == r4 && e.kind == EventKind::Delete && e.kv.key == "k/a");
    ensure!(
        e.kv.value == b"a1" && e.kv.mod_revision == r1,
        "delete carries the old value"
    );
    let e = rx.recv().await.context("event")?;
    ensure!(e.revision == r4 && e.kind == EventKind::Put && e.kv.value == b"b2");
    ensure!(e.kv.create_revision == r2 && e.kv.mod_revision == r4);
    ensure!(
        matches!(rx.try_recv(), Err(TryRecvError::Empty)),
        "nothing else under k/"
    );

    let r5 = store
        .txn(ops(vec![put("other/y", "y"), put("k/c", "c1")]))
        .await?
        .revision;
    let e = rx.recv().await.context("live event")?;
    ensure!(e.revision == r5 && e.kv.key == "k/c" && e.kind == EventKind::Put);

    let revisions: Vec<u64> = std::iter::from_fn(|| all.try_recv().ok())
        .map(|e| e.revision)
        .collect();
    ensure!(revisions == [r1, r2, r4, r4, r5], "from 0: {revisions:?}");

    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_chunks_roundtrip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = single(dir.path()).await?;
    let chunk = |digest: &str, offset: u64, data: &[u8]| Op::PutBlobChunk {
        digest: digest.into(),
        offset,
        data: data.to_vec(),
    };
    // A digest that is a prefix of another must not see its chunks.
    store
        .txn(ops(vec![
            chunk("sha256:ab", 0, b"hello "),
            chunk("sha256:abc", 0, b"other"),
        ]))
        .await?;
    store
        .txn(ops(vec![
            chunk("sha256:ab", 6, b"wor"),
            chunk("sha256:ab", 9, b"ld"),
        ]))
        .await?;

    ensure!(store.read_blob("sha256:ab")?.as_deref() == Some(&b"hello world"[..]));
    ensure!(store.blob_size("sha256:ab")? == Some(11));
    ensure!(store.read_blob("sha256:abc")?.as_deref() == Some(&b"other"[..]));
    ensure!(store.read_blob("sha256:a")?.is_none() && store.blob_size("sha256:a")?.is_none());

    // A large chunk, with every byte value, survives the MessagePack round trip.
    let big: Vec<u8> = (0..(MAX_TXN_BYTES - 1024) as u32)
        .map(|i| (i % 251) as u8)
        .collect();
    store.txn(ops(vec![chunk("sha256:big", 0, &big)])).await?;
    ensure!(store.read_blob("sha256:big")?.as_deref() == Some(&big[..]));

    // A write bigger than one entry may be is refused before it is proposed.
    let before = store.revision();
    let too_big = vec![0u8; MAX_TXN_BYTES + 1];
    match store
        .txn(ops(vec![chunk("sha256:huge", 0, &too_big)]))
        .await
    {
        Err(StoreError::TooLarge(message)) => ensure!(message.contains("limit")),
        other => anyhow::bail!("expected TooLarge, got {other:?}"),
    }
    ensure!(store.revision() == before && store.blob_size("sha256:huge")?.is_none());

    store
        .txn(ops(vec![Op::DeleteBlob {
            digest: "sha256:ab".into(),
        }]))
        .await?;
    ensure!(store.read_blob("sha256:ab")?.is_none());
    ensure!(
        store.read_blob("sha256:abc")?.is_some(),
        "neighbour untouched"
    );

    store
        .txn(ops(vec![
            chunk("sha256:gap", 0, b"ab"),
            chunk("sha256:gap", 5, b"cd"),
        ]))
        .await?;
    ensure!(matches!(
        store.read_blob("sha256:gap"),
        Err(StoreError::Corrupt(_))
    ));
    ensure!(store.blob_size("sha256:gap")? == Some(7));

    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_and_revision() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = single(dir.path()).await?;
    let written = store.txn(ops(vec![put("kept", "yes")])).await?;
    let chunk = Op::PutBlobChunk {
        digest: "sha256:kept".into(),
        offset: 0,
        data: b"blob".to_vec(),
    };
    store.txn(ops(vec![chunk])).await?;
    let before = store.revision();
    store.shutdown().await?;
    drop(store);

    let store = Store::open(config(1, dir.path(), "127.0.0.1:9")).await?;
    ensure!(
        store.revision() == before,
        "revision {} after reopen, {before} before",
        store.revision()
    );
    let kept = store.get("kept")?.context("key survives")?;
    ensure!(kept.value == b"yes" && kept.mod_revision == written.revision);
    ensure!(store.read_blob("sha256:kept")?.as_deref() == Some(&b"blob"[..]));
    match store.watch("", written.revision) {
        Err(StoreError::Compacted { oldest }) => ensure!(oldest == before),
        other => anyhow::bail!("expected Compacted, got {other:?}"),
    }

    store.initialize_single().await?; // no-op: the member has state
    let next = store.txn(ops(vec![put("after", "restart")])).await?;
    ensure!(next.succeeded && next.revision > before);
    ensure!(store.get("kept")?.is_some());
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(1, dir.path(), "127.0.0.1:9");
    cfg.snapshot_every = 10;
    cfg.keep_logs = 0;
    let store = Store::open(cfg.clone()).await?;
    store.initialize_single().await?;
    for i in 0..30 {
        store.txn(ops(vec![put(&format!("n/{i:02}"), "v")])).await?;
    }
    let last = store.revision();
    let metrics = store
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index + 10 >= last),
            "log purged behind a snapshot",
        )
        .await?;
    ensure!(metrics.snapshot.is_some());
    ensure!(dir.path().join("member-1/snapshots/current.snap").exists());
    store.shutdown().await?;
    drop(store);

    let store = Store::open(cfg).await?;
    let (items, revision) = store.range("n/")?;
    ensure!(items.len() == 30 && revision >= last);
    ensure!(store.txn(ops(vec![put("n/30", "v")])).await?.succeeded);
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_keep_their_own_outcomes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = single(dir.path()).await?;
    let entries_before = store.progress().last_log_index;
    let revision_before = store.revision();
    let mut events = store.watch("", revision_before)?;

    // 100 writers create keys of their own; 100 race to create one key.
    let writes = (0..200).map(|i| {
        let txn = if i % 2 == 0 {
            ops(vec![put(&format!("own/{i:03}"), "v")])
        } else {
            Txn {
                checks: vec![Check::Absent {
                    key: "contested".into(),
                }],
                ops: vec![put("contested", &i.to_string())],
            }
        };
        store.txn(txn)
    });
    let outcomes = futures::future::try_join_all(writes).await?;

    let winners: Vec<usize> = (1..200)
        .step_by(2)
        .filter(|&i| outcomes[i].succeeded)
        .collect();
    ensure!(
        winners.len() == 1,
        "one create-only write wins: {winners:?}"
    );
    ensure!((0..200).step_by(2).all(|i| outcomes[i].succeeded));
    let contested = store.get("contested")?.context("contested key")?;
    ensure!(contested.value == winners[0].to_string().as_bytes());
    ensure!(contested.mod_revision == outcomes[winners[0]].revision);

    // Each successful write has a revision of its own, with no gaps.
    let mut revisions: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.succeeded)
        .map(|o| o.revision)
        .collect();
    revisions.sort_unstable();
    let expected: Vec<u64> = (revision_before + 1..=revision_before + 101).collect();
    ensure!(revisions == expected, "revisions {revisions:?}");
    ensure!(store.revision() == revision_before + 101);
    // A failed write writes nothing and names a revision already reached.
    ensure!(outcomes
        .iter()
        .filter(|o| !o.succeeded)
        .all(|o| o.revision <= store.revision() && o.failed_check == Some(0)));

    // They shared Raft entries (and so fsyncs).
    let entries = store.progress().last_log_index - entries_before;
    ensure!(entries < 100, "{entries} log entries for 200 writes");

    // Watchers see every write once, in revision order.
    let mut seen = Vec::new();
    while seen.len() < 101 {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await?
            .context("watch closed")?;
        seen.push(event.revision);
    }
    ensure!(seen == expected, "watch saw {seen:?}");
    store.shutdown().await?;
    Ok(())
}
