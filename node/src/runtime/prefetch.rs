//! A request body read ahead before an instance is taken for it: small bodies
//! arrive whole, larger ones up to [`PREFETCH`] bytes, so a client that sends
//! slowly (or not at all) holds a buffer for as long as the pod's timeout
//! allows, never an instance and its memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

/// Bytes read ahead at most; the rest streams to the guest as it reads.
pub const PREFETCH: usize = 64 << 10;

/// The frames read ahead, then the rest of the body.
pub struct Prefetched<B> {
    buffered: VecDeque<Frame<Bytes>>,
    rest: Option<Pin<Box<B>>>,
}

/// Why reading ahead stopped short.
pub enum PrefetchError<E> {
    /// The deadline passed first.
    Timeout,
    /// The body failed (the client went away, or sent a broken body).
    Body(E),
}

/// Reads `body` until [`PREFETCH`] bytes, its end, or `deadline`.
pub async fn prefetch<B>(
    body: B,
    deadline: Instant,
) -> Result<Prefetched<B>, PrefetchError<B::Error>>
where
    B: Body<Data = Bytes>,
{
    let mut body = Box::pin(body);
    let mut buffered = VecDeque::new();
    let mut bytes = 0;
    while bytes < PREFETCH && !body.is_end_stream() {
        match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return Err(PrefetchError::Timeout),
            Ok(None) => {
                return Ok(Prefetched {
                    buffered,
                    rest: None,
                })
            }
            Ok(Some(Err(e))) => return Err(PrefetchError::Body(e)),
            Ok(Some(Ok(frame))) => {
                bytes += frame.data_ref().map_or(0, Bytes::len);
                buffered.push_back(frame);
            }
        }
    }
    Ok(Prefetched {
        buffered,
        rest: Some(body),
    })
}

impl<B: Body<Data = Bytes>> Body for Prefetched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.buffered.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.rest.as_mut() {
            Some(rest) => rest.as_mut().poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .buffered
            .iter()
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
        hint.set_lower(hint.lower() + buffered);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}
