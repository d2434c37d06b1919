//! Pod logs: every pod's stdout and stderr, kept in a bounded in-memory ring
//! (what `reef logs -f` follows) and a size-capped file per run under
//! `DATA_DIR/logs/` (what survives a node restart and what `--previous` reads).
//!
//! Writes come from guests and never wait for the disk: they land in the ring
//! and a pending buffer under a short lock, and one flusher task per node
//! appends pending bytes to the files a few times a second, opening each file
//! only for that append, so thousands of quiet pods hold no file descriptors.
//! A pod that writes faster than that loses the excess, marked in its log,
//! not its node's memory. Each run's file is capped: past the cap it rotates
//! once (`.1`), so a pod's logs use at most four times the cap on disk (two
//! runs, two files each).

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::runtime::{OutputSink, Stream};

/// Bytes of recent output each pod keeps in memory for followers. Allocated
/// as written: a quiet pod's ring costs nothing.
const RING_BYTES: usize = 64 << 10;
/// Bytes waiting for the flusher beyond which new output is dropped.
const PENDING_BYTES: usize = 256 << 10;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

const CURRENT: &str = "current.log";
const PREVIOUS: &str = "previous.log";

/// `{CURRENT}.1`, the older half of a run that passed the cap.
fn rotated(name: &str) -> String {
    format!("{name}.1")
}

/// Limits for every pod's logs on a node.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Bytes one run's log file may reach before it rotates.
    pub file_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            file_bytes: 10 << 20,
        }
    }
}

/// Where followers are: which run, and how many bytes it has written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Position {
    run: u64,
    written: u64,
}

/// What writers and followers share; held only for memory operations.
#[derive(Default)]
struct LogState {
    /// The last `RING_BYTES` bytes of the current run.
    ring: VecDeque<u8>,
    position: Position,
    /// Output not yet appended to the current file.
    pending: Vec<u8>,
    /// Bytes dropped since the last flush because `pending` was full.
    dropped: u64,
    /// No more output will come (the run ended for good, or the node stops):
    /// followers finish.
    finished: bool,
    /// The pod is gone from this node, and so are its files.
    removed: bool,
}

impl LogState {
    fn ring_start(&self) -> u64 {
        self.position.written - self.ring.len() as u64
    }

    /// Takes what the flusher should write, with a note for dropped output.
    fn take_pending(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.pending);
        if self.dropped > 0 {
            let note = format!(
                "\n[reef: {} bytes of output dropped: written faster than they could be stored]\n",
                self.dropped
            );
            bytes.extend_from_slice(note.as_bytes());
            self.dropped = 0;
        }
        bytes
    }
}

/// One pod's logs.
pub struct PodLog {
    /// The pod object's uid: a new pod under the same name has other logs.
    pub uid: String,
    dir: PathBuf,
    limits: LogLimits,
    state: Mutex<LogState>,
    /// Serialises file work (appends, rotation, reads) and holds the current
    /// file's size; never taken while holding `state`'s lock for long.
    files: Mutex<u64>,
    changed: watch::Sender<Position>,
}

impl PodLog {
    fn new(uid: String, dir: PathBuf, limits: LogLimits) -> PodLog {
        // A node restarted: the current file may hold output already.
        let file_bytes = std::fs::metadata(dir.join(CURRENT)).map_or(0, |m| m.len());
        PodLog {
            uid,
            dir,
            limits,
            state: Mutex::new(LogState::default()),
            files: Mutex::new(file_bytes),
            changed: watch::channel(Position::default()).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        // Each update leaves the state whole; a panicking writer loses only its write.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn files(&self) -> std::sync::MutexGuard<'_, u64> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run starts: what the last run wrote becomes the previous log (also
    /// after a node restart, when the files are all that is left of it).
    pub fn start_run(&self) {
        let mut file_bytes = self.files();
        let (bytes, removed) = {
            let mut state = self.state();
            (state.take_pending(), state.removed)
        };
        if removed {
            return;
        }
        self.append_to_file(&mut file_bytes, &bytes);
        if *file_bytes > 0 {
            for (from, to) in [
                (rotated(CURRENT), rotated(PREVIOUS)),
                (CURRENT.into(), PREVIOUS.into()),
            ] {
                let (from, to) = (self.dir.join(from), self.dir.join(to));
                let _ = std::fs::remove_file(&to);
                let _ = std::fs::rename(&from, &to);
            }
        }
        *file_bytes = 0;
        let mut state = self.state();
        let run = state.position.run + 1;
        *state = LogState {
            position: Position { run, written: 0 },
            ..LogState::default()
        };
        self.changed.send_replace(state.position);
    }

    fn append(&self, bytes: &[u8]) {
        let mut state = self.state();
        let room = PENDING_BYTES.saturating_sub(state.pending.len());
        let kept = bytes.len().min(room);
        state.pending.extend_from_slice(&bytes[..kept]);
        state.dropped += (bytes.len() - kept) as u64;
        state.ring.extend(bytes);
        let excess = state.ring.len().saturating_sub(RING_BYTES);
        state.ring.drain(..excess);
        state.position.written += bytes.len() as u64;
        self.changed.send_replace(state.position);
    }

    /// Appends pending output to the current file; returns the position the
    /// file now reaches.
    fn flush(&self) -> Position {
        let mut file_bytes = self.files();
        let (bytes, position, removed) = {
            let mut state = self.state();
            (state.take_pending(), state.position, state.removed)
        };
        if !removed {
            self.append_to_file(&mut file_bytes, &bytes);
        }
        position
    }

    /// Appends `bytes` (the last `file_bytes` cap of them at most), rotating
    /// the file first if they would take it past the cap. Under `files`.
    fn append_to_file(&self, file_bytes: &mut u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let cap = self.limits.file_bytes.max(1);
        let bytes = &bytes[bytes.len().saturating_sub(cap as usize)..];
        if *file_bytes + bytes.len() as u64 > cap && *file_bytes > 0 {
            let _ = std::fs::rename(self.dir.join(CURRENT), self.dir.join(rotated(CURRENT)));
            *file_bytes = 0;
        }
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(CURRENT))?;
            file.write_all(bytes)
        });
        match written {
            Ok(()) => *file_bytes += bytes.len() as u64,
            Err(e) => tracing::warn!(dir = %self.dir.display(), "cannot write pod log: {e}"),
        }
    }

    /// Everything the current run (or, with `previous`, the run before) wrote
    /// that is still kept, and the position to follow from. Blocking.
    fn read(&self, previous: bool) -> (Vec<u8>, Position) {
        let position = self.flush();
        // Appends wait while the files are read, so what is read ends at `position`.
        let _files = self.files();
        let name = if previous { PREVIOUS } else { CURRENT };
        let mut bytes = Vec::new();
        for file in [rotated(name), name.to_string()] {
            if let Ok(content) = std::fs::read(self.dir.join(file)) {
                bytes.extend_from_slice(&content);
            }
        }
        (bytes, position)
    }

    /// Output after `from`: the rest of the same run, or a new run from its
    /// start; with a note if the ring no longer holds all of it.
    fn since(&self, from: Position) -> (Vec<u8>, Position, bool) {
        let state = self.state();
        let start = if state.position.run == from.run {
            from.written
        } else {
            0
        };
        let mut bytes = Vec::new();
        if state.position.run != from.run {
            bytes.extend_from_slice(b"[reef: the pod restarted]\n");
        }
        let ring_start = state.ring_start();
        if start < ring_start {
            let note = format!(
                "[reef: {} bytes skipped: the reader fell behind]\n",
                ring_start - start
            );
            bytes.extend_from_slice(note.as_bytes());
        }
        let skip = start.saturating_sub(ring_start) as usize;
        bytes.extend(state.ring.iter().skip(skip));
        (bytes, state.position, state.finished || state.removed)
    }

    /// The kept output, then (if `follow`) everything written after it as it
    /// comes, until no more output will come or the reader goes away. Reads
    /// the files first: call off the async threads or accept a short block.
    pub fn stream(
        self: &Arc<Self>,
        previous: bool,
        follow: bool,
    ) -> impl futures::Stream<Item = Bytes> + Send + 'static {
        let (first, position) = self.read(previous);
        let reader = Reader {
            log: self.clone(),
            first: Some(first).filter(|b| !b.is_empty()),
            position,
            follow: follow && !previous,
            changes: self.changed.subscribe(),
        };
        futures::stream::unfold(reader, |mut reader| async move {
            if let Some(first) = reader.first.take() {
                return Some((Bytes::from(first), reader));
            }
            if !reader.follow {
                return None;
            }
            loop {
                // Marked seen before reading, so `changed` fires for anything
                // written after this read.
                reader.changes.borrow_and_update();
                let (bytes, next, done) = reader.log.since(reader.position);
                reader.position = next;
                if !bytes.is_empty() {
                    return Some((Bytes::from(bytes), reader));
                }
                if done {
                    return None;
                }
                reader.changes.changed().await.ok()?;
            }
        })
    }

    /// No more output will come (until a new run starts): followers finish.
    pub fn finish(&self) {
        let mut state = self.state();
        state.finished = true;
        self.changed.send_replace(state.position);
    }

    /// The pod is gone: followers finish and nothing more is written.
    fn remove(&self) {
        let mut state = self.state();
        state.removed = true;
        state.pending.clear();
        self.changed.send_replace(state.position);
    }
}

/// A follower's place in a pod's log.
struct Reader {
    log: Arc<PodLog>,
    first: Option<Vec<u8>>,
    position: Position,
    follow: bool,
    changes: watch::Receiver<Position>,
}

/// The sink a pod's instances write into.
struct Sink(Arc<PodLog>);

impl OutputSink for Sink {
    fn write(&self, _stream: Stream, bytes: &[u8]) {
        self.0.append(bytes);
    }
}

/// Every pod's logs on this node.
#[derive(Clone)]
pub struct NodeLogs {
    root: PathBuf,
    limits: LogLimits,
    pods: Arc<Mutex<HashMap<String, Arc<PodLog>>>>,
}

impl NodeLogs {
    pub fn new(root: PathBuf, limits: LogLimits) -> NodeLogs {
        NodeLogs {
            root,
            limits,
            pods: Arc::default(),
        }
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PodLog>>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory of a pod's logs: one per pod object (its uid), so a new
    /// pod under an old name starts clean.
    fn dir_of(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.root.join(crate::pods::pod_dir(namespace, name, uid))
    }

    /// The pod's log (created on first use) and a sink that writes into it.
    pub fn open(
        &self,
        key: &str,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> (Arc<PodLog>, Arc<dyn OutputSink>) {
        let log = {
            let mut pods = self.pods();
            match pods.get(key) {
                Some(log) if log.uid == uid => log.clone(),
                // New, or a new pod object under an old name.
                _ => {
                    let dir = self.dir_of(namespace, name, uid);
                    let log = Arc::new(PodLog::new(uid.to_string(), dir, self.limits));
                    pods.insert(key.to_string(), log.clone());
                    log
                }
            }
        };
        (log.clone(), Arc::new(Sink(log)))
    }

    pub fn get(&self, key: &str) -> Option<Arc<PodLog>> {
        self.pods().get(key).cloned()
    }

    /// Forgets a pod's logs and deletes their files (the pod is gone).
    pub fn remove(&self, key: &str) {
        let log = self.pods().remove(key);
        if let Some(log) = log {
            log.remove();
            let _files = log.files();
            remove_dir(&log.dir);
        }
    }

    /// The node stops: every follower finishes.
    pub fn finish_all(&self) {
        let logs: Vec<Arc<PodLog>> = self.pods().values().cloned().collect();
        for log in logs {
            log.finish();
        }
    }

    /// Deletes log directories of pods this node no longer has, e.g. ones
    /// removed while the node was down. `keep` holds `namespace/name_uid`.
    pub fn sweep(&self, keep: &std::collections::HashSet<String>) {
        sweep_two_levels(&self.root, keep);
    }

    /// Appends every pod's pending output to its file, until the task ends.
    pub async fn flush_forever(self) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let logs: Vec<Arc<PodLog>> = self.pods().values().cloned().collect();
            // File appends block; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                for log in logs {
                    log.flush();
                }
            })
            .await;
        }
    }
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), "cannot remove: {e}"),
    }
}

/// Removes `root/A/B` for every `A/B` not in `keep`.
pub(crate) fn sweep_two_levels(root: &Path, keep: &std::collections::HashSet<String>) {
    let Ok(namespaces) = std::fs::read_dir(root) else {
        return;
    };
    for namespace in namespaces.flatten() {
        let ns = namespace.file_name().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir(namespace.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&format!("{ns}/{name}")) {
                remove_dir(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    fn log(dir: &Path, cap: u64) -> Arc<PodLog> {
        Arc::new(PodLog::new(
            "uid".into(),
            dir.to_path_buf(),
            LogLimits { file_bytes: cap },
        ))
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn runs_rotate_into_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(dir.path(), 1 << 20);
        log.start_run();
        log.append(b"first run\n");
        log.start_run();
        log.append(b"second run\n");
        assert_eq!(text(&log.read(false).0), "second run\n");
        assert_eq!(text(&log.read(true).0), "first run\n");
        // A node restart: a fresh PodLog over the same files.
        let again = self::log(dir.path(), 1 << 20);
        again.start_run();
        assert_eq!(text(&again.read(true).0), "second run\n");
        assert_eq!(text(&again.read(false).0), "");
    }

    #[test]
    fn a_run_past_the_cap_keeps_two_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(dir.path(), 100);
        log.start_run();
        for i in 0..50 {
            log.append(format!("line {i:02}\n").as_bytes());
            log.flush();
        }
        let kept = text(&log.read(false).0);
        assert!(kept.len() <= 200, "{} bytes kept", kept.len());
        assert!(kept.ends_with("line 49\n"), "{kept}");
        assert!(!kept.contains("line 00"), "{kept}");
    }

    #[tokio::test]
    async fn followers_get_new_output_and_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(dir.path(), 1 << 20);
        log.start_run();
        log.append(b"a\n");
        let mut stream = Box::pin(log.stream(false, true));
        assert_eq!(stream.next().await.as_deref(), Some(&b"a\n"[..]));
        log.append(b"b\n");
        assert_eq!(stream.next().await.as_deref(), Some(&b"b\n"[..]));
        log.start_run();
        log.append(b"c\n");
        let next = text(&stream.next().await.expect("more"));
        assert!(
            next.contains("restarted") && next.ends_with("c\n"),
            "{next}"
        );
        log.finish();
        assert_eq!(stream.next().await, None);
    }

    #[test]
    fn a_reader_behind_the_ring_is_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(dir.path(), u64::MAX);
        log.start_run();
        let (_, from) = log.read(false);
        log.append(&vec![b'x'; RING_BYTES + 10]);
        let (bytes, _, _) = log.since(from);
        assert!(text(&bytes[..80]).contains("10 bytes skipped"));
        assert!(bytes.len() > RING_BYTES);
    }

    #[test]
    fn sweep_keeps_only_listed_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["ns/a_1", "ns/b_2", "other/c_3"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let keep = ["ns/a_1".to_string()].into_iter().collect();
        sweep_two_levels(dir.path(), &keep);
        assert!(dir.path().join("ns/a_1").exists());
        assert!(!dir.path().join("ns/b_2").exists());
        assert!(!dir.path().join("other/c_3").exists());
    }
}
