//! Who may use a node's `--listen` port: requests signed with the cluster's
//! node-access key ([`reef_api::signing`]), by other nodes forwarding to this
//! node's pods and by the API server asking for logs. The node fetches the key
//! with its own credential and refreshes it now and then.

use hyper::Request;
use reef_api::signing::{self, SIGNATURE_HEADER};
use reef_api::Client;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct NodeAccess {
    key: Arc<RwLock<Option<String>>>,
}

/// The path and query a signature covers.
fn target<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

impl NodeAccess {
    /// A fixed key (tests).
    pub fn with_key(key: &str) -> NodeAccess {
        let access = NodeAccess::default();
        access.set(key.to_string());
        access
    }

    fn get(&self) -> Option<String> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, key: String) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    /// Fetches the key, retrying until it succeeds, then refreshes it every few
    /// minutes; runs until the task ends.
    pub async fn keep_fetched(self, client: Client) {
        loop {
            let wait = match client.node_access().await {
                Ok(key) => {
                    self.set(key);
                    Duration::from_secs(300)
                }
                Err(e) => {
                    tracing::debug!("node-access key not fetched yet: {e}");
                    Duration::from_secs(2)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The signature header for a request from node `signer` to `pod`
    /// (`NAMESPACE/POD`); `None` until the key is known.
    pub fn sign(&self, signer: &str, method: &str, target: &str, pod: &str) -> Option<String> {
        Some(signing::sign(&self.get()?, signer, method, target, pod))
    }

    /// Who signed `req` for `pod`, or why it is refused.
    pub fn verify<B>(&self, req: &Request<B>, pod: &str) -> Result<String, &'static str> {
        let key = self
            .get()
            .ok_or("this node has not fetched the node-access key yet")?;
        let header = req
            .headers()
            .get(SIGNATURE_HEADER)
            .ok_or("missing signature")?
            .to_str()
            .map_err(|_| "malformed signature")?;
        signing::verify(&key, header, req.method().as_str(), target(req), pod).map(str::to_string)
    }
}
