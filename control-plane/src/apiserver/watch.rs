//! Watch streams: newline-delimited JSON (or server-sent events for browsers) of
//! changes after a revision, with periodic BOOKMARKs so an idle watcher can resume
//! without relisting.

use super::error::{ApiFailure, ApiResult};
use super::filter::Filter;
use super::objects::Target;
use super::{ApiState, Caller};
use crate::registry::{Change, RegistryError};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use reef_api::{WatchEvent, WatchEventType};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use crate::recent::Recent;
use crate::store::Revision;

/// Encoded frames of recent changes, shared by every stream: a thousand
/// watchers of a change encode it once.
pub struct Frames(Recent<(Revision, String, bool), Bytes>);

impl Default for Frames {
    fn default() -> Self {
        Frames(Recent::new(4096))
    }
}

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
    let mut changes = state
        .registry
        .watch(target.kind, target.namespace.as_deref(), since)?;
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let bookmark_every = state.bookmark_interval;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let _permit = permit;
        // The last revision this stream has fully delivered: a safe resume point.
        let mut delivered = since;
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            let framed = tokio::select! {
                change = changes.recv() => match change {
                    Some(Change { kind, object, revision }) => {
                        delivered = revision;
                        if !filter.matches(&object) {
                            continue;
                        }
                        let id = format!(
                            "{}/{}/{}",
                            object.kind,
                            object.metadata.namespace.as_deref().unwrap_or_default(),
                            object.metadata.name
                        );
                        let made = state.frames.0.get_or_make::<Infallible>((revision, id, sse), || {
                            let object = serde_json::to_value(&*object).unwrap_or_default();
                            Ok(frame(&WatchEvent { kind, object }, sse))
                        });
                        match made {
                            Ok(bytes) => bytes,
                        }
                    }
                    // The store dropped a watcher that fell behind: end the stream, the client resumes.
                    None => break,
                },
                _ = ticker.tick() => {
                    // A member cut off from the quorum must not keep a watcher on a
                    // frozen view: end the stream so the client moves elsewhere.
                    if state.registry.store().read_barrier().await.is_err() {
                        break;
                    }
                    let bookmark = WatchEvent {
                        kind: WatchEventType::Bookmark,
                        object: json!({"metadata": {"resource_version": delivered}}),
                    };
                    frame(&bookmark, sse)
                }
            };
            if tx.send(Ok(framed)).await.is_err() {
                break;
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

fn frame(event: &WatchEvent, sse: bool) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_default();
    if sse {
        Bytes::from(format!("data: {json}\n\n"))
    } else {
        Bytes::from(format!("{json}\n"))
    }
}
