//! Requests between nodes, and from the control plane to a node, carry a
//! signature made with the cluster's node-access key (fetched by each node with
//! its own credential): HMAC-SHA256 over who signs, when, the method, the path
//! and query, and the pod the request is for. A node's `--listen` port serves
//! nothing without one, so a stranger on the network cannot name a pod and
//! skip the Service's host and path, nor read logs.
//!
//! The body is not covered (it streams); a captured request replays only
//! within [`MAX_SKEW`] and only to the same pod and path.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

/// `v1 SIGNER UNIX_SECONDS HEX`.
pub const SIGNATURE_HEADER: &str = "x-reef-signature";
/// How far a signature's time may lie from the verifier's clock, in seconds.
pub const MAX_SKEW: u64 = 300;

fn mac(key: &str, signer: &str, at: u64, method: &str, target: &str, pod: &str) -> Hmac<Sha256> {
    // A key of any length is accepted by HMAC.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in [signer, &at.to_string(), method, target, pod] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The header value for a request to `target` (path and query) for `pod`.
pub fn sign(key: &str, signer: &str, method: &str, target: &str, pod: &str) -> String {
    let at = now();
    let tag = mac(key, signer, at, method, target, pod)
        .finalize()
        .into_bytes();
    format!("v1 {signer} {at} {}", hex::encode(tag))
}

/// Checks a header value; returns who signed it.
pub fn verify<'h>(
    key: &str,
    header: &'h str,
    method: &str,
    target: &str,
    pod: &str,
) -> Result<&'h str, &'static str> {
    let mut parts = header.split(' ');
    let (Some("v1"), Some(signer), Some(at), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("malformed signature");
    };
    let at: u64 = at.parse().map_err(|_| "malformed signature time")?;
    if now().abs_diff(at) > MAX_SKEW {
        return Err("signature too old or from the future");
    }
    let tag = hex::decode(tag).map_err(|_| "malformed signature")?;
    mac(key, signer, at, method, target, pod)
        .verify_slice(&tag)
        .map_err(|_| "wrong signature")?;
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_what_it_signed() {
        let header = sign("key", "n1", "GET", "/a?b=1", "ns/p");
        assert_eq!(verify("key", &header, "GET", "/a?b=1", "ns/p"), Ok("n1"));
        assert!(verify("other", &header, "GET", "/a?b=1", "ns/p").is_err());
        assert!(verify("key", &header, "POST", "/a?b=1", "ns/p").is_err());
        assert!(verify("key", &header, "GET", "/a?b=2", "ns/p").is_err());
        assert!(verify("key", &header, "GET", "/a?b=1", "ns/q").is_err());
        let forged = header.replacen("n1", "n2", 1);
        assert!(verify("key", &forged, "GET", "/a?b=1", "ns/p").is_err());
        assert!(verify("key", "v1 n1 0 00", "GET", "/", "").is_err());
        assert!(verify("key", "garbage", "GET", "/", "").is_err());
    }
}
