//! Watch streams: newline-delimited JSON (or server-sent events for browsers) of
//! changes after a revision, with periodic BOOKMARKs so an idle watcher can resume
//! without relisting.

use super::error::{ApiFailure, ApiResult};
use super::filter::Filter;
use super::objects::Target;
use super::{ApiState, Caller};
use crate::registry::RegistryError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use reef_api::{WatchEvent, WatchEventType};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Open watch streams per token: each holds a task, a channel and a share of
/// the store's fan-out, so one caller must not open them without end.
pub struct WatchLimits {
    per_token: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open watch, counted until dropped.
struct Permit {
    open: Arc<Mutex<HashMap<String, usize>>>,
    token: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

impl WatchLimits {
    pub fn new(per_token: usize) -> WatchLimits {
        WatchLimits {
            per_token,
            open: Arc::default(),
        }
    }

    fn acquire(&self, token: &str) -> ApiResult<Permit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(token.to_string()).or_default();
        if *count >= self.per_token {
            return Err(ApiFailure(RegistryError::TooMany(format!(
                "this token has {count} watches open, the limit (--max-watches-per-token); close one first"
            ))));
        }
        *count += 1;
        Ok(Permit {
            open: self.open.clone(),
            token: token.to_string(),
        })
    }
}

/// Events already waiting are sent in one write of up to this many bytes:
/// a watcher that is behind catches up in few large writes.
const CHUNK_BYTES: usize = 64 << 10;
/// Writes waiting for the client: with `CHUNK_BYTES`, what a stream that
/// is not read holds before it stops taking events (and, once the store's
/// history has moved past it, is closed).
const CHUNKS_QUEUED: usize = 4;
/// How long a stream waits for its client to take a write before ending:
/// a client that reads less than `CHUNK_BYTES` in this time is gone or
/// too slow to follow, and relists when it comes back.
const STALLED_CLIENT: Duration = Duration::from_secs(10);
/// The least time between two wakes of one stream that found nothing to
/// send, once it has used its burst. The store wakes a stream only for
/// changes its selector's first term picks (`Filter::selector`); the rest of
/// a filter is checked here, so a stream of two labels may be woken for
/// changes it drops, and those wakes are paced. A wake that sends is never
/// delayed.
const PACE: Duration = Duration::from_millis(10);
/// Empty wakes a stream may take before the pace applies.
const BURST: u32 = 8;

/// A token bucket of wakes: one token per `PACE`, at most `BURST`.
struct Pacer {
    tokens: u32,
    /// When the next token is added.
    refill_at: tokio::time::Instant,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            tokens: BURST,
            refill_at: tokio::time::Instant::now() + PACE,
        }
    }
}

impl Pacer {
    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        while self.refill_at <= now && self.tokens < BURST {
            self.tokens += 1;
            self.refill_at += PACE;
        }
        if self.tokens == BURST && self.refill_at < now {
            self.refill_at = now + PACE;
        }
    }

    /// When the stream may wake next; `None`: now.
    fn next_wake(&mut self) -> Option<tokio::time::Instant> {
        self.refill();
        (self.tokens == 0).then_some(self.refill_at)
    }

    fn woke(&mut self) {
        self.refill();
        self.tokens = self.tokens.saturating_sub(1);
    }
}

pub fn stream(
    state: Arc<ApiState>,
    caller: &Caller,
    target: Target,
    filter: Filter,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let since = match query.get("since") {
        Some(rev) => rev.parse().map_err(|_| {
            ApiFailure::bad_request(format!("since={rev:?} is not a revision number"))
        })?,
        None => state.registry.store().revision(),
    };
    let permit = state.watches.acquire(&caller.token_id)?;
    let mut changes = state.registry.watch(
        target.kind,
        target.namespace.as_deref(),
        filter.selector(),
        since,
    )?;
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let bookmark_every = state.bookmark_interval;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(CHUNKS_QUEUED);
    tokio::spawn(async move {
        let _permit = permit;
        // The last revision this stream has fully delivered: a safe resume point.
        let mut delivered = since;
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        let mut pacer = Pacer::default();
        loop {
            if let Some(at) = pacer.next_wake() {
                tokio::time::sleep_until(at).await;
            }
            let chunk = tokio::select! {
                change = changes.recv() => {
                    // The store closed the watch (it fell behind the history, or
                    // a snapshot replaced the state): end it, the client resumes.
                    let Some(first) = change else { break };
                    // Whatever else is already there goes in the same write.
                    let mut chunk = Vec::new();
                    let mut next = Some(first);
                    while let Some(change) = next {
                        delivered = change.revision;
                        if filter.matches(&change.object) {
                            push_frame(&mut chunk, change.json(), sse);
                        }
                        next = if chunk.len() < CHUNK_BYTES { changes.try_recv() } else { None };
                    }
                    if chunk.is_empty() {
                        // Woken for nothing this stream sends: those wakes are paced.
                        pacer.woke();
                        continue;
                    }
                    Bytes::from(chunk)
                },
                _ = ticker.tick() => {
                    // A member cut off from the quorum must not keep a watcher on a
                    // frozen view: end the stream so the client moves elsewhere.
                    if state.registry.store().read_barrier().await.is_err() {
                        break;
                    }
                    // A selected stream is not woken by others' changes: it is
                    // still caught up past them, and says so.
                    if let Some(revision) = changes.caught_up_to() {
                        delivered = delivered.max(revision);
                    }
                    let bookmark = WatchEvent {
                        kind: WatchEventType::Bookmark,
                        object: json!({"metadata": {"resource_version": delivered}}),
                    };
                    let mut chunk = Vec::new();
                    push_frame(&mut chunk, &serde_json::to_vec(&bookmark).unwrap_or_default(), sse);
                    Bytes::from(chunk)
                }
            };
            // A client that takes nothing for this long is cut off.
            match tokio::time::timeout(STALLED_CLIENT, tx.send(Ok(chunk))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// One event in the stream's framing: a JSON line, or a server-sent event.
fn push_frame(chunk: &mut Vec<u8>, json: &[u8], sse: bool) {
    if sse {
        chunk.extend_from_slice(b"data: ");
        chunk.extend_from_slice(json);
        chunk.extend_from_slice(b"\n\n");
    } else {
        chunk.extend_from_slice(json);
        chunk.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_stream_wakes_at_once_for_a_burst_then_at_the_pace() {
        let mut pacer = Pacer::default();
        for _ in 0..BURST {
            assert_eq!(pacer.next_wake(), None);
            pacer.woke();
        }
        let next = pacer.next_wake().expect("the burst is used up");
        assert!(next <= tokio::time::Instant::now() + PACE);
    }
}
