//! A `wasi:http` component serving on a TCP port, one fresh instance per
//! request, through the same `HttpPod` the node's proxy calls.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use reef_node::runtime::HttpPod;
use std::convert::Infallible;
use std::net::SocketAddr;

/// Serves until the task is killed (the future is dropped); returns only if
/// it cannot listen. `listening` is told the bound address (port 0 in
/// `REEF_LISTEN` picks a free one, and this is how its user learns which).
pub async fn http(
    pod: HttpPod,
    listen: SocketAddr,
    listening: impl FnOnce(SocketAddr),
) -> std::io::Result<Infallible> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    listening(listener.local_addr()?);
    // The connections die with this future: a killed task answers no one,
    // not even on a kept-alive connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // An accept error (too many open files) is the moment's, not the listener's.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let pod = pod.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let pod = pod.clone();
                async move {
                    let response = match pod.handle(request).await {
                        Ok(response) => response.map(Either::Left),
                        Err(e) => hyper::Response::builder()
                            .status(e.status())
                            .body(Either::Right(Full::new(Bytes::from(format!("{e}\n")))))
                            .unwrap_or_else(|_| {
                                hyper::Response::new(Either::Right(Full::default()))
                            }),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
