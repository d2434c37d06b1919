//! The pod watches that timestamp each bind as it arrives.

use super::control_plane::get_json;
use super::PREFIX;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(super) struct Seen {
    /// When the watch delivered each pod bound, and to which node.
    pub(super) bound: HashMap<String, (Instant, String)>,
    /// Bound pods first seen in a relist rather than a watch event (timestamps late).
    pub(super) late: usize,
    pub(super) reconnects: usize,
    pub(super) relists: usize,
}

/// Follows one namespace's pods (`…/pods?watch=1`) from `since`, resuming after a
/// dropped stream and relisting on 410, until aborted.
pub(super) async fn watch_pods(
    http: reqwest::Client,
    base: String,
    token: String,
    namespace: String,
    mut since: u64,
    seen: Arc<Mutex<Seen>>,
) {
    let list_url = format!("{base}/api/v1/namespaces/{namespace}/pods");
    let mut first = true;
    loop {
        if !first {
            seen.lock().unwrap_or_else(|e| e.into_inner()).reconnects += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first = false;
        let url = format!("{list_url}?watch=1&since={since}");
        let Ok(mut response) = http.get(&url).bearer_auth(&token).send().await else {
            continue;
        };
        if response.status().as_u16() == 410 {
            if let Ok(list) = get_json(&http, &list_url, &token).await {
                let now = Instant::now();
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                s.relists += 1;
                for pod in list["items"].as_array().into_iter().flatten() {
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    if let (true, Some(node)) =
                        (name.starts_with(PREFIX), pod["spec"]["node"].as_str())
                    {
                        if !s.bound.contains_key(name) {
                            s.bound.insert(name.to_string(), (now, node.to_string()));
                            s.late += 1;
                        }
                    }
                }
                since = list["resource_version"].as_u64().unwrap_or(since);
            }
            continue;
        }
        if !response.status().is_success() {
            continue;
        }
        let mut buffer: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.extend_from_slice(&chunk);
            let now = Instant::now();
            let mut consumed = 0;
            while let Some(end) = buffer[consumed..].iter().position(|b| *b == b'\n') {
                let line = &buffer[consumed..consumed + end];
                consumed += end + 1;
                let Ok(event) = serde_json::from_slice::<Value>(line) else {
                    continue;
                };
                let object = &event["object"];
                if let Some(rev) = object["metadata"]["resource_version"].as_u64() {
                    // Events of one transaction share a revision: resume one below the
                    // newest seen so a stream cut mid-transaction loses nothing
                    // (repeats are ignored below).
                    since = since.max(rev.saturating_sub(1));
                }
                if event["type"] == "BOOKMARK" {
                    continue;
                }
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                if let (true, Some(node)) =
                    (name.starts_with(PREFIX), object["spec"]["node"].as_str())
                {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .bound
                        .entry(name.to_string())
                        .or_insert_with(|| (now, node.to_string()));
                }
            }
            buffer.drain(..consumed);
        }
    }
}
