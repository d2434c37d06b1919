//! `reef-net`: how reef listens. Every port a reef process opens (the API,
//! a node's ingress and its `--listen` port) is served by [`serve`], which
//! holds each connection to the same bounds so no stranger can exhaust it:
//!
//! - at most `max_connections` at once; when full, the oldest connection that
//!   has not yet sent a byte is dropped to make room (a flood of half-open
//!   connections cannot lock out clients that talk);
//! - a connection must send its first byte within `first_byte_timeout` and a
//!   whole request head within `header_timeout` (slowloris);
//! - with TLS, the handshake must finish within the header timeout too;
//! - on `stop`, no new connections; open ones finish their requests.

mod limits;
mod server;
pub mod tls;

pub use limits::ConnectionLimits;
pub use server::{serve, ServeConfig};
