//! The node's own endpoints on its `--listen` port, for the control plane:
//! `GET /_reef/logs/{namespace}/{pod}?uid=U&follow=0|1&previous=0|1`.
//!
//! Only signed requests get here (the listen port checks every request's
//! signature first, see [`super::access`]): the API server signs after
//! authorising its own caller.

use super::{text, ProxyBody};
use crate::logs::NodeLogs;
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};

/// Paths under this prefix are the node's own, not a pod's.
pub const PREFIX: &str = "/_reef/";

/// Serves one request for the node's own endpoints.
pub async fn handle<B>(node: &str, logs: &NodeLogs, req: Request<B>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let parts: Vec<&str> = path.trim_start_matches(PREFIX).split('/').collect();
    let ["logs", namespace, pod] = parts.as_slice() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("reef: node {node} has no endpoint {path}"),
        );
    };
    let key = crate::pods::pod_key(namespace, pod);
    let log = logs
        .get(&key)
        .filter(|log| param("uid").is_none_or(|uid| uid == log.uid));
    let Some(log) = log else {
        return text(
            StatusCode::NOT_FOUND,
            format!("reef: pod {key} has no logs on node {node} (not started here yet, or gone)"),
        );
    };
    let flag = |name: &str| param(name).is_some_and(|v| v == "1" || v == "true");
    // Relayed through a channel: the body type must be Sync, the log's stream is
    // not. The task ends when the stream does or the reader hangs up, whichever
    // comes first (a quiet follower notices a hang-up at once, not at the next line).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let (previous, follow) = (flag("previous"), flag("follow"));
    tokio::spawn(async move {
        // Reading the kept files blocks.
        let Ok(stream) = tokio::task::spawn_blocking(move || log.stream(previous, follow)).await
        else {
            return;
        };
        let mut stream = Box::pin(stream);
        loop {
            tokio::select! {
                chunk = stream.next() => {
                    let Some(chunk) = chunk else { return };
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    let frames = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|chunk: Bytes| Ok::<_, super::BoxError>(Frame::data(chunk)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
