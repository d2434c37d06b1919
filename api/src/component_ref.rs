//! `oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`: where a component lives in a
//! registry. A manifest may name a tag; what is stored in a spec is always
//! pinned to the manifest's digest, so a moved tag changes nothing running.

use std::fmt;
use std::str::FromStr;

pub const SCHEME: &str = "oci://";

/// A component in an OCI registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentRef {
    /// `host[:port]`, as the registry is reached.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>` of the manifest.
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{reference:?} is not an OCI component reference: {reason} (expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX)")]
pub struct BadReference {
    pub reference: String,
    pub reason: String,
}

/// The longest reference taken; registries cap names far below this.
const MAX_REFERENCE: usize = 512;

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`, with a port written the one
/// way (digits only, no sign or leading zero), so that one registry has one
/// spelling in specs, caches and allow-lists.
pub fn valid_registry(host: &str) -> bool {
    let port_ok = |port: Option<&str>| {
        port.is_none_or(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && !p.starts_with('0')
                && p.parse::<u16>().is_ok()
        })
    };
    if let Some(rest) = host.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        return inner.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(port);
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && port_ok(port)
}

/// A path component of a repository name (the OCI distribution grammar):
/// lowercase alphanumerics separated by `.`, `_`, `__` or dashes.
fn valid_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(&b) {
            if !separator.is_empty()
                && !matches!(separator.as_str(), "." | "_" | "__")
                && !separator.bytes().all(|s| s == b'-')
            {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `sha256:` and 64 lowercase hex digits.
pub fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl FromStr for ComponentRef {
    type Err = BadReference;

    fn from_str(s: &str) -> Result<Self, BadReference> {
        let bad = |reason: &str| BadReference {
            reference: s.chars().take(MAX_REFERENCE).collect(),
            reason: reason.to_string(),
        };
        if s.len() > MAX_REFERENCE {
            return Err(bad("longer than 512 bytes"));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the registry"))?;
        if !valid_registry(registry) {
            return Err(bad("the registry is not HOST or HOST:PORT"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => {
                if !valid_digest(digest) {
                    return Err(bad("the digest is not sha256: and 64 lowercase hex digits"));
                }
                (path, Some(digest.to_string()))
            }
            None => (path, None),
        };
        // A tag follows the last ':' after the last '/'.
        let last = path.rsplit('/').next().unwrap_or(path);
        let (repository, tag) = match last.rsplit_once(':') {
            Some((_, tag)) => {
                let repository = &path[..path.len() - tag.len() - 1];
                if !valid_tag(tag) {
                    return Err(bad(
                        "the tag may hold only letters, digits, '_', '.' and '-' (at most 128)",
                    ));
                }
                (repository, Some(tag.to_string()))
            }
            None => (path, None),
        };
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(bad(
                "the repository must be lowercase letters and digits, separated by '/', '.', '_' or '-'",
            ));
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad("it names neither a tag nor a digest"));
        }
        Ok(ComponentRef {
            // Host names are case-insensitive: one spelling, for caches and allow-lists.
            registry: registry.to_ascii_lowercase(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for ComponentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ComponentRef {
    /// The same repository at a manifest digest, without the tag: what a spec stores.
    pub fn pinned(&self, digest: &str) -> ComponentRef {
        ComponentRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// The registry host without its port.
    pub fn host(&self) -> &str {
        if let Some(end) = self.registry.strip_prefix('[').and_then(|r| r.find(']')) {
            return &self.registry[..end + 2];
        }
        self.registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(host, _)| host)
    }

    /// A registry on this machine may be spoken to in plain HTTP.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `host:port` (or `host`) as an operator names it in an allow-list.
    pub fn registry_matches(&self, allowed: &str) -> bool {
        self.registry.eq_ignore_ascii_case(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn tags_and_digests_parse_and_print_back() {
        for text in [
            "oci://127.0.0.1:5000/hello:v1",
            "oci://registry.example.com/team/app:1.2.3",
            "oci://localhost/a.b_c--d/e__f:latest",
            &format!("oci://127.0.0.1:5000/hello@{DIGEST}"),
            &format!("oci://[::1]:5000/x/y:t@{DIGEST}"),
        ] {
            let parsed: ComponentRef = text.parse().expect(text);
            assert_eq!(parsed.to_string(), text);
        }
        let r: ComponentRef = "oci://127.0.0.1:5000/team/hello:v1".parse().expect("valid");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/hello");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.host(), "127.0.0.1");
        assert!(r.is_loopback());
        assert_eq!(
            r.pinned(DIGEST).to_string(),
            format!("oci://127.0.0.1:5000/team/hello@{DIGEST}")
        );
        let v6: ComponentRef = format!("oci://[::1]:5000/x@{DIGEST}")
            .parse()
            .expect("valid");
        assert_eq!(v6.host(), "[::1]");
        assert!(v6.is_loopback());
        let upper: ComponentRef = "oci://Registry.Example.COM:5000/x:1"
            .parse()
            .expect("valid");
        assert_eq!(upper.registry, "registry.example.com:5000");
        assert!(upper.registry_matches("REGISTRY.example.com:5000"));
        let remote: ComponentRef = "oci://ghcr.io/x:1".parse().expect("valid");
        assert!(!remote.is_loopback());
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for (text, says) in [
            ("docker://h/x:1", "oci://"),
            ("oci://h", "no repository"),
            ("oci://h/x", "neither a tag nor a digest"),
            ("oci://h/X:1", "lowercase"),
            ("oci://h/x/:1", "lowercase"),
            ("oci://h/-x:1", "lowercase"),
            ("oci://h/x:", "tag"),
            ("oci://h/x:.t", "tag"),
            ("oci://h/x@sha256:abc", "digest"),
            ("oci://h/x@md5:00", "digest"),
            ("oci://h:99999/x:1", "HOST:PORT"),
            ("oci://h_x/y:1", "HOST:PORT"),
            ("oci:///x:1", "HOST:PORT"),
            ("oci://h:+80/x:1", "HOST:PORT"),
            ("oci://h:080/x:1", "HOST:PORT"),
            ("oci://h:0/x:1", "HOST:PORT"),
            ("oci://h:/x:1", "HOST:PORT"),
        ] {
            let err = text.parse::<ComponentRef>().expect_err(text);
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
        let long = format!("oci://h/{}:1", "a".repeat(600));
        assert!(long.parse::<ComponentRef>().is_err());
    }
}
