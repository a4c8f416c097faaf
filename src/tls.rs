//! TLS material: the server's configuration from PEM files, a self-signed certificate for
//! trying FTPS out, and the client's configuration (system roots, a CA file, or no checks).
//! rustls with the ring provider, set explicitly so no process-wide default is needed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Why TLS material could not be loaded or made. Each reads as a sentence for the operator,
/// naming the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be opened or read: "cannot read tls_cert /x: no such file".
    #[error("cannot read {what} {path}: {reason}")]
    Unreadable {
        /// Which setting names the file (`tls_cert`, `tls_key`, `CA file`).
        what: &'static str,
        /// The file.
        path: String,
        /// Why, without an OS error number.
        reason: String,
    },
    /// A PEM section of the file is broken.
    #[error("{what} {path}: not a valid PEM file ({reason})")]
    BadPem {
        /// Which setting names the file.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The certificate file has no `CERTIFICATE` section.
    #[error("{what} {path}: the certificate file holds no certificate")]
    NoCertificate {
        /// Which setting names the file.
        what: &'static str,
        /// The file.
        path: String,
    },
    /// The key file has no private key section.
    #[error("tls_key {0}: the key file holds no private key")]
    NoKey(String),
    /// The private key is not the one of the certificate.
    #[error("tls_key {key}: the key does not match the certificate in tls_cert {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// The system has no usable root certificates.
    #[error("no root certificates found in the system certificate store; use --ca-file")]
    NoSystemRoots,
    /// rustls refused the configuration (e.g. a key type it cannot use).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing the generated files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The result of a TLS handshake, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct Handshake {
    result: &'static str,
}

/// TLS handshakes of the whole process (control, implicit and data connections), by result:
/// counted where they happen, below the sessions; `/metrics` shows them.
pub static HANDSHAKES: std::sync::LazyLock<
    prometheus_client::metrics::family::Family<
        Handshake,
        prometheus_client::metrics::counter::Counter,
    >,
> = std::sync::LazyLock::new(Default::default);

/// Counts one TLS handshake, completed or failed (a timeout included).
pub fn count_handshake(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    HANDSHAKES.get_or_create(&Handshake { result }).inc();
}

/// The failed handshakes so far (for tests).
pub fn failed_handshakes() -> u64 {
    HANDSHAKES
        .get_or_create(&Handshake { result: "failed" })
        .get()
}

/// A handshake under way, counted once: as its result when it ends, as failed when it is
/// dropped before (a time limit around it ran out).
#[derive(Debug)]
pub struct HandshakeCount {
    counted: bool,
}

impl HandshakeCount {
    /// A handshake starts.
    pub fn start() -> HandshakeCount {
        HandshakeCount { counted: false }
    }

    /// It ended, well or not.
    pub fn end(mut self, ok: bool) {
        self.counted = true;
        count_handshake(ok);
    }
}

impl Drop for HandshakeCount {
    fn drop(&mut self) {
        if !self.counted {
            count_handshake(false);
        }
    }
}

/// Installs ring as the process-wide rustls provider, which reqwest's clients (S3, the admin
/// commands) need; the FTP side passes its provider explicitly. An error means one is
/// installed already.
pub fn install_process_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An I/O error as words, without the OS error number.
fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        kind => kind.to_string(),
    }
}

/// A PEM reading error of `what` (`path`); `None` for "no items found", which the caller
/// words for the kind of item it wanted.
fn pem_error(
    what: &'static str,
    path: &Path,
    e: rustls::pki_types::pem::Error,
) -> Option<TlsError> {
    use rustls::pki_types::pem::Error;
    let path = path.display().to_string();
    match e {
        Error::NoItemsFound => None,
        Error::Io(e) => Some(TlsError::Unreadable {
            what,
            path,
            reason: reason(&e),
        }),
        e => Some(TlsError::BadPem {
            what,
            path,
            reason: e.to_string(),
        }),
    }
}

fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let none = || TlsError::NoCertificate {
        what,
        path: path.display().to_string(),
    };
    let failed = |e| pem_error(what, path, e).unwrap_or_else(none);
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(failed)?
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    if certs.is_empty() {
        return Err(none());
    }
    Ok(certs)
}

/// The certificate and key the server presents, swapped whole by [`Certificate::reload`]:
/// connections after a reload get the new one, those before keep what they negotiated.
#[derive(Debug)]
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Loads `cert` (a PEM chain) and `key` (a PEM private key).
    ///
    /// # Errors
    /// [`TlsError`] when a file is unreadable, holds no certificate or key, or the key does
    /// not match the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificate>, TlsError> {
        Ok(Arc::new(Certificate {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(certified(cert, key)?),
        }))
    }

    /// Reads the files again (a renewed certificate); on an error the one in use stays and
    /// the error says why.
    ///
    /// # Errors
    /// As for [`Certificate::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = certified(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The chain in `cert` with the key in `key`, checked to belong together.
fn certified(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs("tls_cert", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        pem_error("tls_key", key, e).unwrap_or_else(|| TlsError::NoKey(key.display().to_string()))
    })?;
    CertifiedKey::from_der(certs, key_der, &provider())
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert.display().to_string(),
                    key: key.display().to_string(),
                }
            }
            e => TlsError::Rustls(e),
        })
}

/// The server's TLS configuration presenting `certificate`.
///
/// # Errors
/// [`TlsError`] when rustls refuses the configuration.
pub fn server_config(certificate: Arc<Certificate>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    // Stateless (encrypted) session tickets: a TLS 1.3 ticket from the session cache is
    // single-use, but clients such as lftp (GnuTLS) resume every data connection with the
    // control connection's one ticket, so the second transfer would fail under
    // --require-tls-resumption.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    // rustls clients (the ferry client) use each TLS 1.3 ticket once, and data connections
    // that may only receive carry none (see `upload_config`; a passive one under PROT P is
    // taken before its direction is known): the supply from the control connection lets that
    // many data connections in a row resume (the ferry client then fetches more). 8 is what a
    // rustls client keeps per server.
    config.send_tls13_tickets = 8;
    Ok(Arc::new(config))
}

/// The configuration for data connections that only receive (uploads): the same certificate
/// and tickets, but no TLS 1.3 session tickets sent. A client that only writes never reads
/// them, and closing a socket with unread data resets the connection, so the tail of the
/// upload still in the client's send buffer would be lost (curl and lftp uploads then fail
/// with 426 now and then). Resuming with a ticket from the control connection still works.
pub fn upload_config(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// The longest a TLS handshake may take (control and data connections alike).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a generated certificate is valid: the longest period browsers and most TLS
/// clients accept for a server certificate (CA/Browser Forum, 2018).
pub const GENERATED_VALIDITY_DAYS: i64 = 825;

/// Writes a self-signed certificate for `localhost`, 127.0.0.1 and ::1 to `dir/cert.pem`, and
/// its key to `dir/key.pem` (mode 0600): valid from now for [`GENERATED_VALIDITY_DAYS`], with a
/// subject and serial number of its own. For trying FTPS out, not for production.
///
/// # Errors
/// [`TlsError`] when generating or writing fails.
pub fn generate_self_signed(dir: &Path) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let mut params = rcgen::CertificateParams::new(names)?;
    params.not_before = time::OffsetDateTime::now_utc();
    params.not_after = params.not_before + time::Duration::days(GENERATED_VALIDITY_DAYS);
    // Clients that remember certificates (NSS in FileZilla and Firefox) refuse a second one
    // with the same issuer and serial, so every generation gets its own of both.
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(
        rcgen::DnType::CommonName,
        format!("ferryd self-signed {:016x}", rand::random::<u64>()),
    );
    params.distinguished_name = subject;
    let signing_key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&signing_key)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join("key.pem"))?
        .write_all(signing_key.serialize_pem().as_bytes())?;
    Ok(())
}

/// How the client checks the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust<'a> {
    /// The system's root certificates.
    System,
    /// Only the CAs in this PEM file (e.g. a self-signed server's own certificate).
    CaFile(&'a Path),
    /// No check at all (`--insecure`): encrypted, but anyone in the middle can read it.
    Insecure,
}

/// The client's TLS configuration.
///
/// # Errors
/// [`TlsError`] when the CA file is unusable, or no system roots can be loaded.
pub fn client_config(trust: &Trust<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs("CA file", path)? {
                roots.add(cert)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any certificate, still checking handshake signatures.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_loads_on_both_sides() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate_self_signed(dir.path()).expect("generate");
        let certificate =
            Certificate::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
                .expect("certificate");
        server_config(certificate).expect("server config");
        client_config(&Trust::CaFile(&dir.path().join("cert.pem"))).expect("client config");
        client_config(&Trust::Insecure).expect("insecure config");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let err = |cert: &Path, key: &Path| match Certificate::load(cert, key) {
            Ok(_) => panic!("{} and {} were accepted", cert.display(), key.display()),
            Err(e) => e,
        };
        assert!(matches!(err(&key, &key), TlsError::NoCertificate { .. }));
        assert!(matches!(err(&cert, &cert), TlsError::NoKey(_)));
        let missing = dir.path().join("missing.pem");
        let text = err(&missing, &key).to_string();
        assert_eq!(
            text,
            format!("cannot read tls_cert {}: no such file", missing.display())
        );
        let other = tempfile::tempdir().expect("tempdir");
        generate_self_signed(other.path()).expect("generate");
        assert!(matches!(
            err(&cert, &other.path().join("key.pem")),
            TlsError::KeyMismatch { .. }
        ));
    }
}
