//! Where a deploy's time goes: the moments a watch first shows each step of a
//! new deployment (pod created, bound, ready; its Service given an endpoint),
//! so `apply-latency` can say which hop to shorten before anyone guesses.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The steps between `reef apply` and the first 200, in order.
pub(crate) const STEPS: [&str; 4] = ["pod created", "pod bound", "pod ready", "endpoint"];

/// First-seen instants by (deployment label `app`, step).
#[derive(Clone, Default)]
pub(crate) struct Timeline {
    seen: Arc<Mutex<HashMap<(String, &'static str), Instant>>>,
}

impl Timeline {
    /// Follows the pods and Services of `namespace` until the tasks are aborted.
    pub(crate) fn follow(
        &self,
        api: &str,
        token: &str,
        namespace: &str,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        ["pods", "services"]
            .into_iter()
            .map(|plural| {
                let url = format!("http://{api}/api/v1/namespaces/{namespace}/{plural}?watch=1");
                tokio::spawn(self.clone().watch(url, token.to_string()))
            })
            .collect()
    }

    /// When `step` was first seen for the objects labelled or named `app`.
    pub(crate) fn at(&self, app: &str, step: &'static str) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&(app.to_string(), step)).copied()
    }

    async fn watch(self, url: String, token: String) {
        let http = reqwest::Client::new();
        let Ok(mut response) = http.get(&url).bearer_auth(&token).send().await else {
            eprintln!("timeline: cannot watch {url}");
            return;
        };
        let mut buffer: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let now = Instant::now();
            buffer.extend_from_slice(&chunk);
            let mut consumed = 0;
            while let Some(end) = buffer[consumed..].iter().position(|b| *b == b'\n') {
                if let Ok(event) =
                    serde_json::from_slice::<Value>(&buffer[consumed..consumed + end])
                {
                    self.record(&event["object"], now);
                }
                consumed += end + 1;
            }
            buffer.drain(..consumed);
        }
    }

    fn record(&self, object: &Value, now: Instant) {
        let mut steps = Vec::new();
        match object["kind"].as_str() {
            Some("Pod") => {
                let Some(app) = object["metadata"]["labels"]["app"].as_str() else {
                    return;
                };
                steps.push((app, STEPS[0]));
                if object["spec"]["node"].is_string() {
                    steps.push((app, STEPS[1]));
                }
                if object["status"]["ready"] == true {
                    steps.push((app, STEPS[2]));
                }
            }
            Some("Service") => {
                let has_endpoint = object["status"]["endpoints"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty());
                if let (true, Some(name)) = (has_endpoint, object["metadata"]["name"].as_str()) {
                    steps.push((name, STEPS[3]));
                }
            }
            _ => {}
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (app, step) in steps {
            seen.entry((app.to_string(), step)).or_insert(now);
        }
    }
}
