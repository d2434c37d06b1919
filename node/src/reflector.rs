//! A local mirror of one kind, kept current by list + watch: the node's only view of
//! cluster state. It relists when the watch's history expired (410) or the stream
//! broke, so it converges after any outage of the control plane.

use futures::{FutureExt as _, StreamExt};
use reef_api::{Client, Kind, RawObject, WatchEventType};
use std::collections::BTreeMap;
use std::time::Duration;

pub type Mirror = BTreeMap<String, RawObject>;

/// Longest quiet spell on a watch before it is considered dead.
const WATCH_SILENCE: Duration = Duration::from_secs(35);

fn key(obj: &RawObject) -> String {
    format!("{}/{}", obj.namespace(), obj.metadata.name)
}

/// Runs forever, calling `on_change` with the whole mirror after the initial list and
/// after every change. `query` filters server-side (e.g. `node=NAME` for pods).
pub async fn reflect<F>(client: Client, kind: Kind, query: Vec<(String, String)>, mut on_change: F)
where
    F: FnMut(&Mirror),
{
    let query_refs = || {
        query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>()
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        let list = match client.list(kind, None, &query_refs()).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(kind = %kind, "list failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let mut mirror: Mirror = list.items.into_iter().map(|o| (key(&o), o)).collect();
        on_change(&mirror);
        let mut revision = list.resource_version;
        // Watch until the history runs out; then relist.
        loop {
            let mut stream = match client.watch(kind, None, revision, &query_refs()).await {
                Ok(stream) => Box::pin(stream),
                Err(e) if e.status() == Some(410) => break,
                Err(e) => {
                    tracing::warn!(kind = %kind, "watch failed, retrying: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            // A server sends a BOOKMARK at least every 10 s; silence means it is
            // gone or cut off, so reconnect (maybe to another member).
            'stream: while let Ok(Some(event)) =
                tokio::time::timeout(WATCH_SILENCE, stream.next()).await
            {
                let Ok(event) = event else { break };
                let mut changed = apply(&mut mirror, &mut revision, event);
                // A burst (a batch of binds, a rollout) is taken whole before
                // `on_change` looks at the mirror, not once per event.
                while let Some(next) = stream.next().now_or_never() {
                    match next {
                        Some(Ok(event)) => changed |= apply(&mut mirror, &mut revision, event),
                        _ => {
                            if changed {
                                on_change(&mirror);
                            }
                            break 'stream;
                        }
                    }
                }
                if changed {
                    on_change(&mirror);
                }
            }
        }
    }
}

/// Applies one watch event to the mirror; true if the mirror changed.
fn apply(mirror: &mut Mirror, revision: &mut u64, event: reef_api::WatchEvent) -> bool {
    if event.kind == WatchEventType::Bookmark {
        if let Some(rv) = event
            .object
            .pointer("/metadata/resource_version")
            .and_then(|v| v.as_u64())
        {
            *revision = (*revision).max(rv);
        }
        return false;
    }
    let Ok(obj) = serde_json::from_value::<RawObject>(event.object) else {
        return false;
    };
    // The events of one transaction share its revision, and a stream may be cut
    // between them: resume from just below, so the rest of it comes again
    // (applying an event twice changes nothing). Bookmarks are whole revisions.
    *revision = (*revision).max(obj.metadata.resource_version.saturating_sub(1));
    match event.kind {
        WatchEventType::Deleted => mirror.remove(&key(&obj)).is_some(),
        _ => {
            mirror.insert(key(&obj), obj);
            true
        }
    }
}
