//! A guest's stdout and stderr into the FIFOs containerd gave the task.
//!
//! The runtime calls the sink on the guest's thread and it must not block,
//! so writes go through a queue to one writer task; a reader that falls
//! behind by more than the queue loses output rather than stalling the guest.
//! [`FifoOutput::finish`] waits until everything queued before it is written,
//! so a task's exit is published only after its last line.

use bytes::Bytes;
use reef_node::runtime::{OutputSink, Stream};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

/// Chunks queued for the FIFOs before output is dropped.
const QUEUE: usize = 4096;
/// How long a stopping task waits for its output to be read.
const FINISH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

enum Message {
    Write(Stream, Bytes),
    Finish(oneshot::Sender<()>),
}

pub struct FifoOutput {
    queue: mpsc::Sender<Message>,
}

impl OutputSink for FifoOutput {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        let _ = self
            .queue
            .try_send(Message::Write(stream, Bytes::copy_from_slice(bytes)));
    }
}

impl FifoOutput {
    /// Starts the writer for these paths (empty: discard that stream).
    pub fn start(stdout: &str, stderr: &str) -> FifoOutput {
        let (queue, rx) = mpsc::channel(QUEUE);
        let paths = [stdout, stderr].map(|p| (!p.is_empty()).then(|| PathBuf::from(p)));
        tokio::spawn(write_all(rx, paths));
        FifoOutput { queue }
    }

    /// Returns once everything written before the call is in the FIFOs,
    /// or after [`FINISH_DEADLINE`]: a FIFO nobody reads any more (opened
    /// read-write, it never says so) must not keep a task from stopping.
    pub async fn finish(&self) {
        let (done, written) = oneshot::channel();
        let finished = async {
            if self.queue.send(Message::Finish(done)).await.is_ok() {
                let _ = written.await;
            }
        };
        if tokio::time::timeout(FINISH_DEADLINE, finished)
            .await
            .is_err()
        {
            tracing::warn!("output not read for {FINISH_DEADLINE:?}: the rest is dropped");
        }
    }
}

/// Opens a FIFO for writing. Read-write, so the open never waits for a
/// reader (Linux); a reader that never comes costs only the pipe's buffer.
fn open(path: Option<PathBuf>) -> Option<pipe::Sender> {
    let path = path?;
    match pipe::OpenOptions::new().read_write(true).open_sender(&path) {
        Ok(sender) => Some(sender),
        Err(e) => {
            tracing::warn!(path = %path.display(), "output discarded: {e}");
            None
        }
    }
}

async fn write_all(mut rx: mpsc::Receiver<Message>, paths: [Option<PathBuf>; 2]) {
    let [stdout, stderr] = paths;
    let (mut stdout, mut stderr) = (open(stdout), open(stderr));
    while let Some(message) = rx.recv().await {
        match message {
            Message::Write(stream, bytes) => {
                let file = match stream {
                    Stream::Stdout => &mut stdout,
                    Stream::Stderr => &mut stderr,
                };
                // A reader that went away takes no more output.
                if let Some(f) = file.as_mut() {
                    if f.write_all(&bytes).await.is_err() {
                        *file = None;
                    }
                }
            }
            Message::Finish(done) => {
                for f in [&mut stdout, &mut stderr].into_iter().flatten() {
                    let _ = f.flush().await;
                }
                // Closed, so the reader sees the end of the output.
                (stdout, stderr) = (None, None);
                let _ = done.send(());
            }
        }
    }
}
