//! Which outbound HTTP requests a pod may make (its manifest `outbound` list).
//!
//! Enforced in wasi-http's `send_request` hook, the one place every outgoing
//! request passes through: a refused request fails inside the guest with
//! `HTTP-request-denied` before any DNS lookup or connection.
//!
//! Patterns are matched on the request's authority:
//! - `api.example.com` matches that host exactly (case-insensitive);
//! - `*.internal` matches any host under `internal` (`a.internal`,
//!   `a.b.internal`), but not `internal` itself;
//! - a `:port` suffix matches that port only; without one, a pattern matches
//!   the scheme's default port (80 for http, 443 for https), the same way a
//!   URL without a port means that port.

use std::future::Future;
use std::sync::Arc;

use super::services::Verdict;
use http::uri::{Authority, Scheme};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// A parsed `outbound` list. The empty list (the default) allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// Stored with its leading dot: `*.internal` is `.internal`.
    Suffix(String),
}

/// An `outbound` entry that is not `host[:port]` or `*.suffix[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid outbound pattern {pattern:?}: {reason} (expected host[:port] or *.suffix[:port])")]
pub struct InvalidPattern {
    pub pattern: String,
    pub reason: &'static str,
}

impl OutboundPolicy {
    /// Parses every pattern, failing on the first invalid one.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<OutboundPolicy, InvalidPattern> {
        let rules = patterns
            .iter()
            .map(|p| parse_rule(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(OutboundPolicy { rules })
    }

    /// Parses what it can and logs the rest. Manifests are validated before
    /// they reach a node, so this only guards against a skewed validator; an
    /// unparsable pattern allows nothing.
    pub fn lenient<S: AsRef<str>>(patterns: &[S]) -> OutboundPolicy {
        let rules = patterns
            .iter()
            .filter_map(|p| match parse_rule(p.as_ref()) {
                Ok(rule) => Some(rule),
                Err(e) => {
                    tracing::warn!("ignoring {e}");
                    None
                }
            })
            .collect();
        OutboundPolicy { rules }
    }

    /// Whether a request to `uri` may leave the node.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        let default_port = if uri.scheme() == Some(&Scheme::HTTP) {
            80
        } else {
            443
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = normalise_host(authority.host());
        self.rules.iter().any(|rule| {
            rule.port.unwrap_or(default_port) == port
                && match &rule.host {
                    HostPattern::Exact(exact) => *exact == host,
                    HostPattern::Suffix(suffix) => {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    }
                }
        })
    }
}

fn parse_rule(pattern: &str) -> Result<Rule, InvalidPattern> {
    let invalid = |reason| InvalidPattern {
        pattern: pattern.to_string(),
        reason,
    };
    let (wildcard, rest) = match pattern.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    if rest.is_empty() {
        return Err(invalid("no host"));
    }
    if rest.contains(['/', '@', '*', '?', '#']) {
        return Err(invalid("only a host and an optional port may be given"));
    }
    let authority: Authority = rest.parse().map_err(|_| invalid("not a valid authority"))?;
    // `Authority` parses "x.com:99999" but then has no `port_u16`.
    let after_host = authority
        .as_str()
        .rsplit_once(']')
        .map_or(authority.as_str(), |(_, rest)| rest);
    if after_host.contains(':') && authority.port_u16().is_none() {
        return Err(invalid("the port is not a number up to 65535"));
    }
    let host = normalise_host(authority.host());
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let host = if wildcard {
        HostPattern::Suffix(format!(".{host}"))
    } else {
        HostPattern::Exact(host)
    };
    Ok(Rule {
        host,
        port: authority.port_u16(),
    })
}

/// Lower case, without a trailing root dot, so `API.example.com.` cannot
/// slip past `api.example.com` or miss it.
fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The wasi-http hooks of one store: the pod's allow-list on the name, then
/// the node's network policy on the resolved address.
pub(crate) struct OutboundHooks {
    pub(crate) policy: Arc<OutboundPolicy>,
    pub(crate) network: Arc<super::egress::NetworkPolicy>,
    pub(crate) services: Option<super::services::ServiceAccess>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        if let (Some(access), Some(authority)) = (&self.services, request.uri().authority()) {
            let host = normalise_host(authority.host());
            let path = request.uri().path().to_string();
            match access.verdict(&host, &path) {
                Verdict::Inside(target) => {
                    let router = access.router.clone();
                    return Box::new(async move {
                        let response = router.call(target, request).await;
                        let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                            Box::new(async { Ok(()) });
                        Ok((response, done))
                    });
                }
                Verdict::Refused => {
                    tracing::debug!(%host, "a Service of another namespace, by name: refused");
                    return Box::new(async { Err(HttpError::HttpRequestDenied) });
                }
                Verdict::Outside => {}
            }
        }
        if !self.policy.allows(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outbound request denied by the pod's outbound list");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let network = self.network.clone();
        Box::new(async move { super::egress::send(&network, request, options).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[&str], uri: &str) -> bool {
        OutboundPolicy::new(patterns)
            .unwrap()
            .allows(&uri.parse().unwrap())
    }

    #[test]
    fn exact_hosts_match_their_default_port() {
        let list = ["api.example.com"];
        assert!(allows(&list, "https://api.example.com/v1"));
        assert!(allows(&list, "http://API.example.com./v1"));
        assert!(allows(&list, "https://api.example.com:443/"));
        assert!(!allows(&list, "https://api.example.com:8443/"));
        assert!(!allows(&list, "http://api.example.com:443/"));
        assert!(!allows(&list, "https://evil.com/?api.example.com"));
        assert!(!allows(&list, "https://api.example.com.evil.com/"));
        assert!(!allows(&list, "/relative"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let list = ["*.internal:8443"];
        assert!(allows(&list, "https://a.internal:8443/"));
        assert!(allows(&list, "http://a.b.internal:8443/"));
        assert!(!allows(&list, "https://internal:8443/"));
        assert!(!allows(&list, "https://xinternal:8443/"));
        assert!(!allows(&list, "https://a.internal/"));
    }

    #[test]
    fn ports_and_ip_literals() {
        assert!(allows(&["127.0.0.1:8080"], "http://127.0.0.1:8080/x"));
        assert!(!allows(&["127.0.0.1:8080"], "http://127.0.0.1:8081/x"));
        assert!(allows(&["[::1]:9000"], "http://[::1]:9000/"));
        assert!(!allows(&[], "https://api.example.com/"));
    }

    #[test]
    fn bad_patterns_are_explained() {
        for bad in [
            "",
            "*.",
            "http://x.com",
            "x.com/path",
            "a.*.com",
            "x.com:",
            "x.com:99999",
            "u@x.com",
        ] {
            let err = OutboundPolicy::new(&[bad]).unwrap_err();
            assert!(
                err.to_string().contains("expected host[:port]"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            OutboundPolicy::lenient(&["ok.com", "bad/"]),
            OutboundPolicy::new(&["ok.com"]).unwrap()
        );
    }
}
