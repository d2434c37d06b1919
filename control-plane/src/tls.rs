//! The cluster's certificate authority: made at `--init`, kept in the key
//! space (so joining members get it with the member token and backups carry
//! it), and used by each member to issue itself a server certificate for the
//! names and addresses it is reached at.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

/// The CA's certificate and key, as PEM.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A server's certificate (issued by the cluster CA) and its key, as PEM.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn tls_error(e: rcgen::Error) -> anyhow::Error {
    anyhow::anyhow!("certificate: {e}")
}

impl ClusterCa {
    /// A new CA, valid for ten years.
    pub fn generate() -> anyhow::Result<ClusterCa> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "reef cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key).map_err(tls_error)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid for
    /// a year; members issue themselves a new one at every start.
    pub fn issue_server(&self, names: &[String]) -> anyhow::Result<ServerCert> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(tls_error)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(tls_error)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "reef control-plane member");
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(tls_error)?),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(tls_error)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_issues_server_certificates_for_names_and_addresses() {
        let ca = ClusterCa::generate().expect("ca");
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let server = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into(), "10.0.0.2".into()])
            .expect("server cert");
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(server.key_pem.contains("PRIVATE KEY"));
        // The issued certificate chains to the CA (rustls checks it in the TLS tests).
        let reloaded: ClusterCa =
            serde_json::from_str(&serde_json::to_string(&ca).expect("encode")).expect("decode");
        assert!(reloaded.issue_server(&["a.example".into()]).is_ok());
    }
}
