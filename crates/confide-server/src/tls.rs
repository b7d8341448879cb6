//! TLS 1.3 for every connection: the server's certificate and its fingerprint.
//!
//! On first start the server makes a self-signed certificate in its data directory and
//! reuses it afterwards; clients pin its SHA-256 fingerprint. A real certificate chain
//! and key can be configured instead.

mod record;
pub mod stream;

use anyhow::{Context as _, Result, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::sync::Arc;

/// The server's TLS setup.
pub struct TlsIdentity {
    /// The rustls configuration (TLS 1.3 only).
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the end-entity certificate, for clients to pin.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &format_fingerprint(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

/// Formats a fingerprint as colon-separated uppercase hex pairs.
#[must_use]
pub fn format_fingerprint(fingerprint: &[u8; 32]) -> String {
    fingerprint
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// SHA-256 of a certificate's DER bytes.
#[must_use]
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

pub(crate) const CERT_FILE: &str = "server-cert.pem";
const KEY_FILE: &str = "server-key.pem";

/// Loads the configured certificate, or the self-signed one in `data_dir`, making it
/// on first use.
///
/// # Errors
/// If files cannot be read, written or parsed.
pub fn load_or_create(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<TlsIdentity> {
    let (chain, key) = match (cert, key) {
        (Some(cert), Some(key)) => (read_chain(cert)?, read_key(key)?),
        (None, None) => self_signed(data_dir)?,
        _ => bail!("tls.cert and tls.key must be given together"),
    };
    let Some(leaf) = chain.first() else {
        bail!("the certificate file holds no certificate");
    };
    let fingerprint = fingerprint_of(leaf);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not match or are unsupported")?;
    // After the handshake the connection protects records itself (see `stream`).
    config.enable_secret_extraction = true;
    Ok(TlsIdentity {
        config: Arc::new(config),
        fingerprint,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse certificates in {}", path.display()))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("cannot parse the private key in {}", path.display()))?
        .with_context(|| format!("no private key in {}", path.display()))
}

fn self_signed(data_dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        return Ok((read_chain(&cert_path)?, read_key(&key_path)?));
    }
    let names = vec!["localhost".to_owned(), "confide.local".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names)
        .context("cannot generate a self-signed certificate")?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    tracing::info!(path = %cert_path.display(), "created a self-signed certificate");
    Ok((read_chain(&cert_path)?, read_key(&key_path)?))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), None, None).unwrap();
        let second = load_or_create(dir.path(), None, None).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(format_fingerprint(&first.fingerprint).len(), 32 * 3 - 1);
    }

    #[test]
    fn configured_files_are_used() {
        let generated = tempfile::tempdir().unwrap();
        let made = load_or_create(generated.path(), None, None).unwrap();
        let other = tempfile::tempdir().unwrap();
        let loaded = load_or_create(
            other.path(),
            Some(&generated.path().join(CERT_FILE)),
            Some(&generated.path().join(KEY_FILE)),
        )
        .unwrap();
        assert_eq!(made.fingerprint, loaded.fingerprint);
        assert!(!other.path().join(CERT_FILE).exists());
        assert!(
            load_or_create(other.path(), Some(&generated.path().join(CERT_FILE)), None).is_err()
        );
    }
}
