//! Where a guest's outbound HTTP may connect, decided on the resolved address
//! and not only on the name: a listed host that resolves to loopback, a
//! private range, link-local (cloud metadata), the node itself or a
//! control-plane member is refused. The check and the connection use the same
//! resolved address, so a name that resolves differently the second time (DNS
//! rebinding) gains nothing.
//!
//! The request is then sent over that connection (TLS named after the host,
//! with the public web roots), as wasi-http's default sender would.

use bytes::Bytes;
use http::uri::Scheme;
use http_body::Body;
use http_body_util::BodyExt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions};

/// An address range, as `10.0.0.0/8` or `fd00::/8` (a bare address is one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad =
            || format!("{text:?} is not an address range: write 10.0.0.0/8, 127.0.0.2 or fd00::/8");
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }
}

impl From<IpAddr> for Cidr {
    /// One host.
    fn from(network: IpAddr) -> Cidr {
        let prefix = if network.is_ipv4() { 32 } else { 128 };
        Cidr { network, prefix }
    }
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Ranges that are never a public destination: reachable only where the
/// operator opens them.
const SPECIAL: [Cidr; 14] = [
    Cidr::v4(0, 0, 0, 0, 8),
    Cidr::v4(10, 0, 0, 0, 8),
    Cidr::v4(100, 64, 0, 0, 10),
    Cidr::v4(127, 0, 0, 0, 8),
    Cidr::v4(169, 254, 0, 0, 16),
    Cidr::v4(172, 16, 0, 0, 12),
    Cidr::v4(192, 0, 0, 0, 24),
    Cidr::v4(192, 168, 0, 0, 16),
    Cidr::v4(198, 18, 0, 0, 15),
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
    Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
];

/// Ranges never reachable, whatever is opened: unspecified, multicast,
/// broadcast and reserved.
const NEVER: [Cidr; 5] = [
    Cidr::v4(0, 0, 0, 0, 32),
    Cidr::v4(224, 0, 0, 0, 4),
    Cidr::v4(240, 0, 0, 0, 4),
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// Which resolved addresses a node lets its guests connect to.
#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy {
    /// Ranges the operator opened (`reef node --outbound-allow`).
    pub allowed: Vec<Cidr>,
    /// Addresses refused whatever is opened: the node's own and the control
    /// plane's (every port on them).
    pub refused: Vec<IpAddr>,
}

/// `::ffff:a.b.c.d` is `a.b.c.d`: judged as such.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl NetworkPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if NEVER.iter().any(|c| c.contains(ip)) || self.refused.iter().any(|r| canonical(*r) == ip)
        {
            return false;
        }
        if SPECIAL.iter().any(|c| c.contains(ip)) {
            return self.allowed.iter().any(|c| c.contains(ip));
        }
        true
    }

    /// The addresses of `host:port` this policy lets a guest connect to,
    /// in resolver order.
    async fn destinations(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, HttpError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let resolved: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::lookup_host((bare, port)),
            )
            .await
            .map_err(|_| HttpError::DnsTimeout)?
            .map_err(|_| HttpError::DestinationNotFound)?
            .collect(),
        };
        let permitted: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| self.permits(a.ip()))
            .collect();
        if permitted.is_empty() {
            tracing::debug!(%host, ?resolved, "outbound connection refused: the address is not public");
            return Err(HttpError::DestinationIpProhibited);
        }
        Ok(permitted)
    }
}

/// TLS with the public web roots, made once per node.
fn tls() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"));
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A response whose body streams from the upstream, and the future that
/// drives the connection (both as wasi-http's send hook hands them back).
pub(crate) type Sent = (
    http::Response<http_body_util::combinators::UnsyncBoxBody<Bytes, HttpError>>,
    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
);

/// Sends `request` to an address the policy permits.
pub(crate) async fn send(
    network: &NetworkPolicy,
    mut request: http::Request<impl Body<Data = Bytes, Error = HttpError> + Send + 'static>,
    options: Option<RequestOptions>,
) -> Result<Sent, HttpError> {
    let uri = request.uri();
    let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = authority.host().to_string();
    let option = |pick: fn(&RequestOptions) -> Option<Duration>| {
        options
            .as_ref()
            .and_then(pick)
            .unwrap_or(Duration::from_secs(600))
    };
    let connect_timeout = option(|o| o.connect_timeout);
    let first_byte_timeout = option(|o| o.first_byte_timeout);

    let mut last = HttpError::ConnectionRefused;
    let mut connected = None;
    for address in network.destinations(&host, port).await? {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                connected = Some(stream);
                break;
            }
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    let tcp = connected.ok_or(last)?;
    let stream: Box<dyn Stream> = if https {
        let name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(HttpError::InvalidDnsNameError)?;
        Box::new(tls().connect(name, tcp).await.map_err(HttpError::Tls)?)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    // Origin form on the wire: the authority travels in the Host header.
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    *request.uri_mut() = target;
    // The connection runs beside the guest, which may still stream the body.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(connection.await);
    });
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    let body = response.map(|b| b.map_err(HttpError::from).boxed_unsync());
    let driven: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send> =
        Box::new(async move {
            match done_rx.await {
                Ok(Ok(())) | Err(_) => Ok(()),
                Ok(Err(e)) if e.is_timeout() => Err(HttpError::HttpResponseTimeout),
                Ok(Err(e)) => Err(HttpError::from(e)),
            }
        });
    Ok((body, driven))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], refused: &[&str]) -> NetworkPolicy {
        NetworkPolicy {
            allowed: allowed.iter().map(|c| c.parse().expect("cidr")).collect(),
            refused: refused.iter().map(|a| a.parse().expect("ip")).collect(),
        }
    }

    fn permits(policy: &NetworkPolicy, ip: &str) -> bool {
        policy.permits(ip.parse().expect("ip"))
    }

    #[test]
    fn only_public_addresses_by_default() {
        let p = policy(&[], &[]);
        for refused in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!permits(&p, refused), "{refused}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "172.32.0.1"] {
            assert!(permits(&p, public), "{public}");
        }
    }

    #[test]
    fn opened_ranges_but_never_the_node_or_members() {
        let p = policy(&["127.0.0.2", "10.0.0.0/8"], &["10.0.0.5", "127.0.0.1"]);
        assert!(permits(&p, "127.0.0.2"));
        assert!(!permits(&p, "127.0.0.3"));
        assert!(permits(&p, "10.9.9.9"));
        assert!(
            !permits(&p, "10.0.0.5"),
            "the node's own address stays closed"
        );
        assert!(!permits(&p, "::ffff:10.0.0.5"));
        assert!(!permits(&p, "127.0.0.1"));
        let everything = policy(&["0.0.0.0/0", "::/0"], &[]);
        assert!(!permits(&everything, "224.0.0.1"), "multicast never");
        assert!(!permits(&everything, "0.0.0.0"), "0.0.0.0 means this host");
    }

    #[test]
    fn ranges_parse_and_reject_nonsense() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("fd00::/8".parse::<Cidr>().is_ok());
        assert!("1.2.3.4".parse::<Cidr>().is_ok());
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
