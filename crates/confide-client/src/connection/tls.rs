//! TLS 1.3 with certificate pinning instead of CA chains.
//!
//! Confide servers usually have self-signed certificates, so the client trusts a server
//! by the SHA-256 of its end-entity certificate (see [`Fingerprint`]), like SSH. The
//! verifier here records the fingerprint it was shown, refuses one that differs from the
//! expected pin, and still verifies the handshake signature so that the peer provably
//! holds the pinned certificate's key. It must not consult CA roots or check names, and
//! must not decide whether an unknown server is trusted (the caller does).

use crate::address::ServerAddress;
use crate::fingerprint::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The name sent in SNI when the host is not a valid DNS name or IP address; it is
/// never checked, since trust comes from the pin.
const FALLBACK_SERVER_NAME: &str = "confide.invalid";

/// A TLS connection and the fingerprint of the certificate the server presented.
pub(crate) type Secured = (TlsStream<TcpStream>, Fingerprint);

/// Why a TLS connection could not be made.
#[derive(Debug)]
pub(crate) enum TlsFailure {
    /// TCP connect failed.
    Connect(std::io::Error),
    /// The TLS handshake failed; `presented` is the certificate's fingerprint if the
    /// server got as far as showing one.
    Handshake {
        error: std::io::Error,
        presented: Option<Fingerprint>,
    },
}

/// Opens a TCP connection to `server` and runs a TLS 1.3 handshake that accepts the
/// server's certificate only if its fingerprint is `expected` (any, if `None`).
pub(crate) async fn connect(
    server: &ServerAddress,
    expected: Option<Fingerprint>,
) -> Result<Secured, TlsFailure> {
    let tcp = TcpStream::connect((server.host(), server.port()))
        .await
        .map_err(TlsFailure::Connect)?;
    // Chat frames are small and latency matters more than packet count.
    tcp.set_nodelay(true).map_err(TlsFailure::Connect)?;

    let verifier = Arc::new(PinningVerifier::new(expected));
    let config = client_config(verifier.clone()).map_err(|error| TlsFailure::Handshake {
        error: std::io::Error::other(error),
        presented: None,
    })?;
    let name = server_name(server).map_err(|error| TlsFailure::Handshake {
        error: std::io::Error::other(error),
        presented: None,
    })?;
    let result = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let presented = verifier.presented();
    match (result, presented) {
        (Ok(stream), Some(fingerprint)) => Ok((stream, fingerprint)),
        (Ok(_), None) => Err(TlsFailure::Handshake {
            error: std::io::Error::other("the server presented no certificate"),
            presented: None,
        }),
        (Err(error), presented) => Err(TlsFailure::Handshake { error, presented }),
    }
}

/// The name for SNI: the host if it is a valid DNS name or IP address, else a fixed
/// placeholder (never checked, since trust comes from the pin).
fn server_name(
    server: &ServerAddress,
) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    ServerName::try_from(server.host().to_owned())
        .or_else(|_| ServerName::try_from(FALLBACK_SERVER_NAME))
}

fn client_config(verifier: Arc<PinningVerifier>) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

/// Accepts the server's certificate by fingerprint and verifies handshake signatures.
#[derive(Debug)]
struct PinningVerifier {
    expected: Option<Fingerprint>,
    // A std mutex: set once during the handshake and read once after, never held
    // across an await.
    presented: Mutex<Option<Fingerprint>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinningVerifier {
    fn new(expected: Option<Fingerprint>) -> PinningVerifier {
        PinningVerifier {
            expected,
            presented: Mutex::new(None),
            algorithms: ring::default_provider().signature_verification_algorithms,
        }
    }

    fn presented(&self) -> Option<Fingerprint> {
        *self
            .presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = Fingerprint::of_der(end_entity.as_ref());
        *self
            .presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(fingerprint);
        match self.expected {
            Some(expected) if expected != fingerprint => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The client offers only TLS 1.3, so this is never legitimately reached.
        Err(rustls::Error::General(
            "TLS 1.2 is not supported".to_owned(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_records_and_compares_fingerprints() {
        let cert = CertificateDer::from(vec![1u8, 2, 3]);
        let fingerprint = Fingerprint::of_der(&[1, 2, 3]);
        let name = ServerName::try_from("example.org").unwrap();
        let now = UnixTime::now();

        let tofu = PinningVerifier::new(None);
        assert!(tofu.verify_server_cert(&cert, &[], &name, &[], now).is_ok());
        assert_eq!(tofu.presented(), Some(fingerprint));

        let pinned = PinningVerifier::new(Some(fingerprint));
        assert!(
            pinned
                .verify_server_cert(&cert, &[], &name, &[], now)
                .is_ok()
        );

        let other = PinningVerifier::new(Some(Fingerprint([9; 32])));
        assert!(
            other
                .verify_server_cert(&cert, &[], &name, &[], now)
                .is_err()
        );
        assert_eq!(other.presented(), Some(fingerprint));
        assert!(!other.supported_verify_schemes().is_empty());
    }

    #[test]
    fn client_config_builds_for_tls13_only() {
        let config = client_config(Arc::new(PinningVerifier::new(None))).unwrap();
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn server_names_fall_back_for_odd_hosts() {
        let ip: ServerAddress = "127.0.0.1:1".parse().unwrap();
        assert!(matches!(server_name(&ip), Ok(ServerName::IpAddress(_))));
        let odd: ServerAddress = "bad-.example:1".parse().unwrap();
        assert_eq!(
            server_name(&odd).unwrap(),
            ServerName::try_from(FALLBACK_SERVER_NAME).unwrap()
        );
    }
}
