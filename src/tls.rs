//! TLS material: the server's configuration from PEM files, a self-signed certificate for
//! trying FTPS out, and the client's configuration (system roots, a CA file, or no checks).
//! rustls with the ring provider, set explicitly so no process-wide default is needed.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Why TLS material could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
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

fn pem_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The server's TLS configuration from a certificate chain and a private key (PEM files).
///
/// # Errors
/// [`TlsError`] when a file is unreadable, empty, or the key does not fit the certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // Stateless (encrypted) session tickets: a TLS 1.3 ticket from the session cache is
    // single-use, but clients such as lftp (GnuTLS) resume every data connection with the
    // control connection's one ticket, so the second transfer would fail under
    // --require-tls-resumption.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    // rustls clients (the ferry client) use each TLS 1.3 ticket once, and upload data
    // connections carry none (see `upload_config`): a supply of tickets from the control
    // connection (and every download or listing) lets that many uploads in a row resume.
    // 8 is what a rustls client keeps per server.
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

/// Writes a self-signed certificate for `localhost`, 127.0.0.1 and ::1 to `dir/cert.pem`, and
/// its key to `dir/key.pem` (mode 0600). For trying FTPS out, not for production.
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
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
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
            for cert in load_certs(path)? {
                roots.add(cert)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(pem_error(
                    Path::new("system certificate store"),
                    "no root certificates found; use --ca-file",
                ));
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
        server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
            .expect("server config");
        client_config(&Trust::CaFile(&dir.path().join("cert.pem"))).expect("client config");
        client_config(&Trust::Insecure).expect("insecure config");
        let err = server_config(&dir.path().join("key.pem"), &dir.path().join("key.pem"));
        assert!(err.is_err(), "a key is not a certificate");
    }
}
