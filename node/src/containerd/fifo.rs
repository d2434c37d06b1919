//! A task's stdout and stderr: FIFOs the node makes and containerd hands the
//! shim, read by the node into the pod's log as the embedded runtime's
//! output is.
//!
//! Both ends are opened read-write, so neither waits for the other and no
//! end of file comes between runs; a run's output ends when its task has
//! exited (the shim writes all of it before it reports the exit), and
//! [`Pump::finish`] then reads what is left in the pipe.

use crate::runtime::{OutputSink, Stream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// Bytes of the end of stderr kept to find the shim's last word on a run.
const TAIL: usize = 4096;

/// Makes a FIFO at `path`, replacing whatever was there.
pub fn make(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)
}

/// Copies one FIFO into a pod's output until finished.
pub struct Pump {
    finish: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    tail: Arc<Mutex<Vec<u8>>>,
}

impl Pump {
    pub fn start(
        path: PathBuf,
        stream: Stream,
        sink: Arc<dyn OutputSink>,
    ) -> std::io::Result<Pump> {
        let receiver = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)?;
        let (finish, mut finishing) = oneshot::channel::<()>();
        let tail = Arc::new(Mutex::new(Vec::new()));
        let kept = tail.clone();
        let keep = move |bytes: &[u8]| {
            sink.write(stream, bytes);
            if stream == Stream::Stderr {
                let mut tail = kept.lock().unwrap_or_else(|e| e.into_inner());
                tail.extend_from_slice(bytes);
                let over = tail.len().saturating_sub(TAIL);
                tail.drain(..over);
            }
        };
        let done = tokio::spawn(async move {
            let mut buffer = vec![0u8; 16 << 10];
            loop {
                tokio::select! {
                    ready = receiver.readable() => {
                        if ready.is_err() {
                            return;
                        }
                        match receiver.try_read(&mut buffer) {
                            Ok(0) => return,
                            Ok(n) => keep(&buffer[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return,
                        }
                    }
                    _ = &mut finishing => {
                        // The writer is done: what is in the pipe is all there is.
                        while let Ok(n) = receiver.try_read(&mut buffer) {
                            if n == 0 {
                                break;
                            }
                            keep(&buffer[..n]);
                        }
                        return;
                    }
                }
            }
        });
        Ok(Pump {
            finish: Some(finish),
            done,
            tail,
        })
    }

    /// The end of stderr read so far.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&tail).into_owned()
    }

    /// Reads what the ended run left in the pipe and stops; the stderr tail.
    pub async fn finish(mut self) -> String {
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(());
        }
        let _ = (&mut self.done).await;
        self.tail()
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.done.abort();
    }
}
