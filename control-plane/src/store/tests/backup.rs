//! Backup under concurrent writes, restore into a fresh directory as a new
//! member, and the checks that refuse a damaged backup.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Context};
use tokio::net::TcpListener;

use super::harness::{start, start_on};
use super::{ops, put, WAIT};
use crate::store::{MemberInfo, MemberRole, Op, Store, StoreError};

/// key → (value, mod_revision)
type State = BTreeMap<String, (Vec<u8>, u64)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_writes_restores_the_backup_point() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let source = start(1, dir.path()).await?;
    source.store.initialize_single().await?;

    // State before the writer starts: keys, and a blob of several chunks.
    let mut expected = State::new();
    for i in 0..30 {
        let key = format!("pre/{i:02}");
        let w = source.store.txn(ops(vec![put(&key, "v")])).await?;
        expected.insert(key, (b"v".to_vec(), w.revision));
    }
    let blob: Vec<u8> = (0..700 * 1024u32).map(|i| (i % 251) as u8).collect();
    for (n, chunk) in blob.chunks(256 * 1024).enumerate() {
        source
            .store
            .txn(ops(vec![Op::PutBlobChunk {
                digest: "sha256:blob".into(),
                offset: (n * 256 * 1024) as u64,
                data: chunk.to_vec(),
            }]))
            .await?;
    }

    // A writer overwrites and deletes keys while the backup runs; it logs
    // every acknowledged change with its revision.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = source.store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut log: Vec<(u64, String, Option<String>)> = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) || i < 40 {
                let key = format!("w/{}", i % 7);
                let (op, value) = if i % 5 == 4 {
                    (Op::Delete { key: key.clone() }, None)
                } else {
                    let v = format!("v{i}");
                    (put(&key, &v), Some(v))
                };
                let w = store.txn(ops(vec![op])).await?;
                log.push((w.revision, key, value));
                i += 1;
            }
            anyhow::Ok(log)
        })
    };
    source
        .store
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.last_applied.is_some_and(|l| l.index > 50),
            "writes flow",
        )
        .await?;
    let floor = source.store.revision();
    let path = dir.path().join("backup.reef");
    let mut file = tokio::fs::File::create(&path).await?;
    let info = source.store.backup(&mut file).await?;
    drop(file);
    let ceiling = source.store.revision();
    stop.store(true, Ordering::Release);
    let log = writer.await??;
    ensure!(
        floor <= info.revision && info.revision <= ceiling,
        "backup at {} outside [{floor}, {ceiling}]",
        info.revision
    );
    ensure!(info.bytes == std::fs::metadata(&path)?.len());
    ensure!(info.checksum.len() == 64);
    ensure!(
        log.iter().any(|(rev, ..)| *rev > info.revision),
        "some writes landed after the backup point"
    );
    for (revision, key, value) in log.into_iter().filter(|(r, ..)| *r <= info.revision) {
        match value {
            Some(v) => {
                expected.insert(key, (v.into_bytes(), revision));
            }
            None => {
                expected.remove(&key);
            }
        }
    }

    // Restore as member 7 at a new address.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let root = dir.path().join("restored");
    let data = root.join("member-7");
    let restored_info = {
        let (path, data, addr) = (path.clone(), data.clone(), addr.clone());
        tokio::task::spawn_blocking(move || Store::restore(&path, &data, 7, &addr)).await??
    };
    ensure!(restored_info == info, "{restored_info:?} vs {info:?}");
    let (some_key, (some_value, _)) = expected.iter().next().context("a key")?;
    ensure!(Store::read_offline(&data, some_key)?.as_ref() == Some(some_value));
    ensure!(Store::read_offline(&data, "missing")?.is_none());

    let restored = start_on(7, &root, listener, |_| {}).await?;
    ensure!(restored.store.is_initialized());
    ensure!(restored.store.revision() == info.revision);
    restored
        .store
        .raft()
        .wait(Some(WAIT))
        .current_leader(7, "the restored member leads")
        .await?;
    ensure!(
        restored.store.members()
            == vec![MemberInfo {
                id: 7,
                address: addr.clone(),
                role: MemberRole::Leader
            }]
    );
    let (items, revision) = restored.store.range("")?;
    ensure!(revision >= info.revision);
    let got: State = items
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
        .collect();
    ensure!(got == expected, "restored {got:?}\nexpected {expected:?}");
    ensure!(restored.store.read_blob("sha256:blob")?.as_deref() == Some(&blob[..]));

    // History starts at the restored revision; new writes come after it.
    match restored.store.watch("", info.revision - 1) {
        Err(StoreError::Compacted { oldest }) => ensure!(oldest == info.revision),
        other => anyhow::bail!("expected Compacted, got {other:?}"),
    }
    let mut rx = restored.store.watch("new/", info.revision)?;
    let next = restored.store.txn(ops(vec![put("new/a", "1")])).await?;
    ensure!(next.succeeded && next.revision > info.revision);
    let event = rx.recv().await.context("watch event")?;
    ensure!(event.revision == next.revision && event.kv.key == "new/a");

    // Another member joins the restored one (by its snapshot: no log before it).
    let joiner = start(8, &root).await?;
    restored.store.add_member(8, joiner.addr.clone()).await?;
    joiner.caught_up(next.revision).await?;
    ensure!(joiner.store.get("new/a")?.is_some());
    ensure!(joiner.store.range("")?.0.len() == expected.len() + 1);
    ensure!(joiner.store.read_blob("sha256:blob")?.as_deref() == Some(&blob[..]));

    for m in [source, restored, joiner] {
        m.stop().await?;
    }

    // Damaged backups are refused before anything is written.
    let bytes = std::fs::read(&path)?;
    let flipped = dir.path().join("flipped.reef");
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(&flipped, &damaged)?;
    let truncated = dir.path().join("truncated.reef");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000])?;
    for bad in [&flipped, &truncated] {
        let target = dir.path().join("bad-restore");
        let result = Store::restore(bad, &target, 9, "127.0.0.1:9");
        ensure!(
            matches!(result, Err(StoreError::Corrupt(_))),
            "{}: {result:?}",
            bad.display()
        );
        ensure!(!target.exists(), "nothing written for {}", bad.display());
    }
    // A directory that already holds something is refused too.
    let result = Store::restore(&path, &data, 9, "127.0.0.1:9");
    ensure!(matches!(result, Err(StoreError::Config(_))), "{result:?}");
    Ok(())
}
