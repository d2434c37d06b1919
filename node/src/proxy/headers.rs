//! The headers a proxy adds to what it takes on ingress, as HTTP proxies do:
//! `x-forwarded-for` (the client's address appended), `x-forwarded-host`,
//! `x-forwarded-proto`, and an `x-request-id` kept from the client or made here,
//! so one request can be followed through proxies, components and logs.

use hyper::header::{HeaderMap, HeaderValue};
use rand::Rng;
use std::net::SocketAddr;

pub const REQUEST_ID: &str = "x-request-id";
pub const FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED_HOST: &str = "x-forwarded-host";
const FORWARDED_PROTO: &str = "x-forwarded-proto";
/// A client's request id longer than this is replaced, not passed on.
const MAX_REQUEST_ID: usize = 200;
/// A client's `x-forwarded-for` longer than this is restarted from its peer.
const MAX_FORWARDED_FOR: usize = 1024;

/// A new request id: 16 random bytes in hex.
fn new_request_id() -> String {
    hex::encode(rand::thread_rng().gen::<[u8; 16]>())
}

/// Sets the forwarding headers on a request taken on ingress from `peer`;
/// returns its request id.
pub fn on_ingress(headers: &mut HeaderMap, peer: Option<SocketAddr>, host: &str) -> HeaderValue {
    let kept = headers
        .get(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.to_str().is_ok())
        .cloned();
    let id = kept.unwrap_or_else(|| {
        HeaderValue::from_str(&new_request_id()).unwrap_or(HeaderValue::from_static("-"))
    });
    headers.insert(REQUEST_ID, id.clone());
    if let Some(peer) = peer {
        let ip = peer.ip().to_string();
        let chain = match headers.get(FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) if !earlier.is_empty() && earlier.len() < MAX_FORWARDED_FOR => {
                format!("{earlier}, {ip}")
            }
            _ => ip,
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert(FORWARDED_FOR, value);
        }
    }
    // The host this proxy routed by: a client's own claim is not passed on.
    headers.remove(FORWARDED_HOST);
    if let Ok(value) = HeaderValue::from_str(host) {
        if !host.is_empty() {
            headers.insert(FORWARDED_HOST, value);
        }
    }
    headers.insert(FORWARDED_PROTO, HeaderValue::from_static("http"));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_client_request_id_and_appends_the_peer() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        headers.insert(FORWARDED_FOR, HeaderValue::from_static("10.0.0.9"));
        headers.insert(FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        let id = on_ingress(
            &mut headers,
            Some("192.0.2.1:5000".parse().unwrap()),
            "a.local",
        );
        assert_eq!(id, "abc");
        assert_eq!(headers[FORWARDED_FOR], "10.0.0.9, 192.0.2.1");
        assert_eq!(headers[FORWARDED_HOST], "a.local");
    }

    #[test]
    fn makes_a_request_id_when_the_client_sent_none_or_a_bad_one() {
        let mut headers = HeaderMap::new();
        let id = on_ingress(&mut headers, None, "a.local");
        assert_eq!(id.len(), 32);
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(500)).unwrap());
        assert_eq!(on_ingress(&mut headers, None, "h").len(), 32);
    }
}
