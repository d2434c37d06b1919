//! A guest's stdout and stderr, handed to whoever keeps the pod's logs.
//!
//! The runtime does not store output; it passes every write to the pod's
//! [`OutputSink`] as it happens (the agent's log buffer and file). Writes
//! never block the guest: a sink that cannot keep up drops, it does not stall.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Which of the guest's output streams a write came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives a pod's output. Called on the guest's thread: must not block.
pub trait OutputSink: Send + Sync + 'static {
    fn write(&self, stream: Stream, bytes: &[u8]);
}

/// One of a store's output streams, writing into a sink.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    sink: Arc<dyn OutputSink>,
    stream: Stream,
}

impl GuestOutput {
    pub(crate) fn new(sink: Arc<dyn OutputSink>, stream: Stream) -> GuestOutput {
        GuestOutput { sink, stream }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sink.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
