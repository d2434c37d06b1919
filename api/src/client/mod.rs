//! The HTTP client for the reef API, used by the CLI, the node agent and tests.
//!
//! It knows the URL layout of DESIGN §6 and turns error bodies into [`ApiError`]s.
//! Given several control-plane URLs it moves to the next one when a member is
//! unreachable, so a caller only sees a failure when none answers.

use crate::resource::*;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{0}")]
    Api(ApiError),
    /// No server could be reached.
    #[error("cannot reach the control plane ({servers}): {message}")]
    Unreachable { servers: String, message: String },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    #[error("no control-plane server configured: run `reef up`, or set REEF_SERVER")]
    NoServer,
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

mod cluster;

/// How long one request to one member may take before the next member is tried
/// (reads) or the caller hears of it (writes).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A control-plane member: its `--id`, address, and role (leader, follower, learner).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub id: u64,
    pub address: String,
    pub role: String,
}

/// URL path of a collection (`name = None`) or one object. `namespace = None` on a
/// namespaced kind lists across all namespaces.
pub fn object_path(kind: Kind, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut path = match namespace {
        Some(ns) if kind.namespaced() => format!("/api/v1/namespaces/{ns}/{}", kind.plural()),
        _ => format!("/api/v1/{}", kind.plural()),
    };
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    path
}

/// `GET /api/v1/cluster/node-access`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeAccess {
    pub secret: String,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    servers: Arc<Vec<String>>,
    token: Option<String>,
    /// The server that answered last; tried first next time.
    preferred: Arc<AtomicUsize>,
    retry_for: Duration,
}

impl Client {
    pub fn new(servers: Vec<String>, token: Option<String>) -> Result<Client> {
        if servers.is_empty() {
            return Err(ClientError::NoServer);
        }
        let http = http_builder()
            .build()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(Client {
            http,
            servers: Arc::new(servers),
            token,
            preferred: Arc::new(AtomicUsize::new(0)),
            retry_for: Duration::from_secs(15),
        })
    }

    /// The same client trusting only `ca_pem` (the cluster CA, PEM) for
    /// HTTPS members.
    pub fn with_ca(mut self, ca_pem: &str) -> Result<Client> {
        let cert = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| {
            ClientError::Decode(format!("the cluster CA certificate does not parse: {e}"))
        })?;
        self.http = http_builder()
            .add_root_certificate(cert)
            .build()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(self)
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Sends to each server in turn until one answers; error statuses are returned
    /// as [`ClientError::Api`] without trying further servers.
    /// Sends to each server in turn until one answers. A member that cannot serve
    /// (unreachable, or 503: it has no quorum and did nothing) makes the client try
    /// the next one, and whole rounds repeat until `retry_for` has passed, so a
    /// leader election looks like a short pause. Other statuses are final,
    /// including 504 (a write whose outcome is unknown), and a write is never
    /// resent once it may have reached a server.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Bytes, &str)>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let deadline = std::time::Instant::now() + self.retry_for;
        let mut last_error;
        loop {
            let start = self.preferred.load(Ordering::Relaxed);
            last_error = None;
            for i in 0..self.servers.len() {
                let index = (start + i) % self.servers.len();
                let url = format!("{}{}", self.servers[index], path);
                let mut request = self.http.request(method.clone(), &url);
                if let Some(token) = &self.token {
                    request = request.bearer_auth(token);
                }
                if let Some((bytes, content_type)) = &body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, *content_type)
                        .body(bytes.clone());
                }
                if let Some(timeout) = timeout {
                    request = request.timeout(timeout);
                }
                match request.send().await {
                    Ok(response) => match check_status(response).await {
                        Err(ClientError::Api(e)) if e.code == 503 => {
                            last_error = Some(ClientError::Api(e));
                        }
                        other => {
                            self.preferred.store(index, Ordering::Relaxed);
                            return other;
                        }
                    },
                    Err(e) => {
                        let unreachable = ClientError::Unreachable {
                            servers: self.servers.join(", "),
                            message: error_chain(&e),
                        };
                        // A request that may have reached the server is not sent
                        // again unless it is a read: a write could apply twice.
                        let safe = e.is_connect()
                            || matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
                        if !safe {
                            return Err(unreachable);
                        }
                        last_error = Some(unreachable);
                    }
                }
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last_error.unwrap_or(ClientError::NoServer))
    }

    /// How long requests keep trying other members before giving up (default 15 s).
    pub fn with_retry_for(mut self, retry_for: Duration) -> Client {
        self.retry_for = retry_for;
        self
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        self.json_within(method, path, body, ATTEMPT_TIMEOUT).await
    }

    async fn json_within<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
        attempt_timeout: Duration,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Some((
                Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?),
                "application/json",
            )),
            None => None,
        };
        let response = self.send(method, path, body, Some(attempt_timeout)).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(error_chain(&e)))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<RawObject> {
        let path = object_path(kind, namespace, Some(name));
        self.json(reqwest::Method::GET, &path, None::<&()>).await
    }

    /// Lists a kind; `query` adds filters such as `("node", "n1")` or `("labels", "app=x")`.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        query: &[(&str, &str)],
    ) -> Result<List> {
        let path = with_query(object_path(kind, namespace, None), query);
        self.json(reqwest::Method::GET, &path, None::<&()>).await
    }

    /// Creates or replaces metadata and spec. `conditional = false` replaces whatever
    /// is stored; with `true`, `metadata.resource_version` of 0 means create-only and
    /// another value must match the stored one (else 409).
    pub async fn put(&self, object: &RawObject, conditional: bool) -> Result<RawObject> {
        let path = object_path(
            object.kind,
            object.metadata.namespace.as_deref(),
            Some(&object.metadata.name),
        );
        let mut body =
            serde_json::to_value(object).map_err(|e| ClientError::Decode(e.to_string()))?;
        if !conditional {
            // No resource_version at all means "unconditional" to the server.
            if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("resource_version");
            }
        }
        self.json(reqwest::Method::PUT, &path, Some(&body)).await
    }

    /// Writes the status subresource; with `resource_version` it is compare-and-swap.
    pub async fn put_status(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        status: &Value,
        resource_version: Option<u64>,
    ) -> Result<RawObject> {
        let mut path = object_path(kind, namespace, Some(name));
        path.push_str("/status");
        if let Some(rv) = resource_version {
            path = with_query(path, &[("resource_version", &rv.to_string())]);
        }
        self.json(reqwest::Method::PUT, &path, Some(status)).await
    }

    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<RawObject> {
        let path = object_path(kind, namespace, Some(name));
        self.json(reqwest::Method::DELETE, &path, None::<&()>).await
    }

    /// Applies a whole file's objects in one transaction.
    pub async fn apply(&self, objects: &[RawObject]) -> Result<ApplyResult> {
        self.json_within(
            reqwest::Method::POST,
            "/api/v1/apply",
            Some(&objects),
            Duration::from_secs(60),
        )
        .await
    }

    /// Whether the cluster holds `digest` for `namespace` (a tenant's
    /// namespace runs only components uploaded to it).
    pub async fn blob_exists(&self, digest: &str, namespace: &str) -> Result<bool> {
        match self
            .send(
                reqwest::Method::HEAD,
                &with_query(
                    format!("/api/v1/blobs/{digest}"),
                    &[("namespace", namespace)],
                ),
                None,
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads a component's bytes into `namespace`.
    pub async fn put_blob(&self, digest: &str, bytes: Vec<u8>, namespace: &str) -> Result<()> {
        self.send(
            reqwest::Method::PUT,
            &with_query(
                format!("/api/v1/blobs/{digest}"),
                &[("namespace", namespace)],
            ),
            Some((Bytes::from(bytes), "application/wasm")),
            Some(Duration::from_secs(300)),
        )
        .await
        .map(drop)
    }

    pub async fn get_blob(&self, digest: &str) -> Result<Bytes> {
        let response = self
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/blobs/{digest}"),
                None,
                Some(Duration::from_secs(300)),
            )
            .await?;
        response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(error_chain(&e)))
    }

    /// Streams changes after `since` (exclusive). The stream ends when the server
    /// closes it; a 410 means `since` is too old and the caller must relist.
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        since: u64,
        query: &[(&str, &str)],
    ) -> Result<impl Stream<Item = Result<crate::resource::WatchEvent>> + Send + 'static> {
        let since = since.to_string();
        let mut params = vec![("watch", "1"), ("since", since.as_str())];
        params.extend_from_slice(query);
        let path = with_query(object_path(kind, namespace, None), &params);
        let response = self.send(reqwest::Method::GET, &path, None, None).await?;
        Ok(ndjson(response.bytes_stream()))
    }

    /// A pod's stdout and stderr, as the node keeps them: the current run, or
    /// with `previous` the run before the last restart. With `follow` the
    /// stream goes on with new output until the pod goes or the caller stops.
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        follow: bool,
        previous: bool,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        let mut params = Vec::new();
        if follow {
            params.push(("follow", "1"));
        }
        if previous {
            params.push(("previous", "1"));
        }
        let path = with_query(
            format!("{}/log", object_path(Kind::Pod, Some(namespace), Some(pod))),
            &params,
        );
        let response = self.send(reqwest::Method::GET, &path, None, None).await?;
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| ClientError::Decode(error_chain(&e)))))
    }

    /// A raw GET for endpoints without a typed helper (logs, metrics).
    pub async fn get_raw(&self, path: &str) -> Result<reqwest::Response> {
        self.send(reqwest::Method::GET, path, None, Some(ATTEMPT_TIMEOUT))
            .await
    }
}

/// HTTPS trusts no built-in roots: only the cluster CA given with
/// [`Client::with_ca`].
fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(30))
        .tls_built_in_root_certs(false)
}

fn with_query(mut path: String, query: &[(&str, &str)]) -> String {
    for (i, (k, v)) in query.iter().enumerate() {
        path.push(if i == 0 && !path.contains('?') {
            '?'
        } else {
            '&'
        });
        path.push_str(k);
        path.push('=');
        path.push_str(&encode_query_value(v));
    }
    path
}

fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'=' | b',' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Includes the causes: reqwest's top-level message alone ("error sending request") says little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if message.contains("certificate") || message.contains("UnknownIssuer") {
        message.push_str(
            " (the server's certificate is not signed by the cluster CA this client trusts: \
             check `ca` in the client config or REEF_CA_FILE)",
        );
    }
    message
}

async fn check_status(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let code = status.as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let error = serde_json::from_slice::<ApiError>(&body).unwrap_or_else(|_| ApiError {
        code,
        reason: status.canonical_reason().unwrap_or("Error").to_string(),
        message: String::from_utf8_lossy(&body).trim().to_string(),
        field: None,
    });
    Err(ClientError::Api(error))
}

/// Splits a byte stream into newline-delimited JSON values.
fn ndjson<S, T>(bytes: S) -> impl Stream<Item = Result<T>> + Send + 'static
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
{
    let state = (Box::pin(bytes), Vec::<u8>::new());
    futures::stream::unfold(Some(state), |state| async move {
        let (mut bytes, mut buffer) = state?;
        loop {
            if let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=newline).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let item =
                    serde_json::from_slice(line).map_err(|e| ClientError::Decode(e.to_string()));
                return Some((item, Some((bytes, buffer))));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Some((Err(ClientError::Decode(error_chain(&e))), None));
                }
                None => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_api_layout() {
        assert_eq!(
            object_path(Kind::Pod, Some("default"), Some("p1")),
            "/api/v1/namespaces/default/pods/p1"
        );
        assert_eq!(object_path(Kind::Pod, None, None), "/api/v1/pods");
        assert_eq!(
            object_path(Kind::Node, Some("default"), Some("n")),
            "/api/v1/nodes/n"
        );
        assert_eq!(
            with_query("/x".into(), &[("a", "b c"), ("labels", "app=x")]),
            "/x?a=b%20c&labels=app=x"
        );
    }

    #[tokio::test]
    async fn ndjson_splits_across_chunks() {
        let chunks: Vec<reqwest::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"{\"a\":1}\n{\"a\"")),
            Ok(Bytes::from_static(b":2}\n\n")),
        ];
        let items: Vec<Result<Value>> = ndjson(futures::stream::iter(chunks)).collect().await;
        let values: Vec<Value> = items.into_iter().map(|r| r.expect("json")).collect();
        assert_eq!(
            values,
            vec![serde_json::json!({"a":1}), serde_json::json!({"a":2})]
        );
    }
}
