//! The accept loop every reef port runs (see the crate docs for the bounds).

use crate::limits::ConnectionLimits;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The bounds of one listening port.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// What the port is, for logs ("api", "ingress", "listen").
    pub name: &'static str,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a new connection may stay silent.
    pub first_byte_timeout: Duration,
    /// How long a client may take to send a whole request head (HTTP/1), and
    /// to finish a TLS handshake.
    pub header_timeout: Duration,
    /// Serve HTTPS with this configuration (plain HTTP without).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ServeConfig {
    pub fn new(name: &'static str) -> ServeConfig {
        ServeConfig {
            name,
            max_connections: 4096,
            first_byte_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Waits for a connection's first byte (without consuming it); false if it
/// sends nothing in time, closes, or is evicted to make room.
async fn first_byte(stream: &TcpStream, timeout: Duration, evicted: &tokio::sync::Notify) -> bool {
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(timeout, stream.peek(&mut byte)) => {
            matches!(peeked, Ok(Ok(n)) if n > 0)
        }
        () = evicted.notified() => false,
    }
}

/// Serves `listener` until `stop` turns true (or forever without one); then
/// takes no new connections and returns once open ones have finished their
/// requests. `make_service` builds the service for each connection from the
/// peer's address.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    config: ServeConfig,
    make_service: F,
    mut stop: Option<tokio::sync::watch::Receiver<bool>>,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let limits = ConnectionLimits::new(config.max_connections);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        let stopping = async {
            match stop.as_mut() {
                Some(stop) => drop(stop.wait_for(|stop| *stop).await),
                None => std::future::pending().await,
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(port = config.name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(ticket) = limits.admit() else {
            tracing::debug!(port = config.name, %peer, "connection refused: the port is full");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(peer);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let (name, first_byte_timeout, header_timeout) = (
            config.name,
            config.first_byte_timeout,
            config.header_timeout,
        );
        let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            if !first_byte(&stream, first_byte_timeout, &ticket.evicted).await {
                return;
            }
            ticket.spoke();
            let ended = match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            // Plain HTTP to a TLS port, a bad client certificate, a stall.
                            Ok(Err(e)) => {
                                tracing::debug!(port = name, %peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => return,
                        };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(port = name, "connection ended: {e}");
            }
            drop(ticket);
        });
    }
    drop(listener);
    tracing::info!(
        port = config.name,
        open = graceful.count(),
        "draining: no new connections, finishing requests in flight"
    );
    graceful.shutdown().await;
}
