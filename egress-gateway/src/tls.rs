//! TLS client configuration: rustls with the ring provider, TLS 1.2 and
//! 1.3 only, trusting the bundled web PKI roots (`webpki-roots`, so the
//! gateway needs no filesystem) plus the enterprise CA bundle from the
//! gateway's configuration. No client certificates. The configuration is
//! rebuilt (and idle connections dropped) whenever the broker sends a new
//! `GatewayConfig`.

use rustls::crypto::ring as provider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

use crate::host::Host;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the enterprise CA bundle has an unreadable PEM block ({0}): fix the bundle named by policy or settings")]
    Pem(String),
    #[error("the enterprise CA bundle holds a certificate rustls refuses as a root ({0}): remove it from the bundle")]
    Root(String),
    #[error("cannot build the TLS client configuration: {0}")]
    Build(String),
}

/// The client configuration for every HTTPS connection; also returns how
/// many enterprise roots were added.
pub fn client_config(extra_roots_pem: &[u8]) -> Result<(Arc<ClientConfig>, usize), TlsSetupError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut extra = 0;
    if !extra_roots_pem.is_empty() {
        for cert in CertificateDer::pem_slice_iter(extra_roots_pem) {
            let cert = cert.map_err(|e| TlsSetupError::Pem(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TlsSetupError::Root(e.to_string()))?;
            extra += 1;
        }
    }
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), extra))
}

/// What the certificate is verified against: the DNS name (sent as SNI),
/// or for an IP-literal host the address itself (no SNI).
pub fn server_name(host: &Host) -> Option<ServerName<'static>> {
    match host {
        Host::Name(n) => ServerName::try_from(n.clone()).ok(),
        Host::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_roots_only() {
        let (cfg, extra) = client_config(&[]).unwrap();
        assert_eq!(extra, 0);
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn garbage_bundle_is_an_error() {
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(client_config(bad).is_err());
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name(&Host::Name("svc.test".into())),
            Some(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name(&Host::Ip("127.0.0.1".parse().unwrap())),
            Some(ServerName::IpAddress(_))
        ));
    }
}
