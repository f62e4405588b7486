//! TLS configuration (rustls with aws-lc-rs): the client side used for upstream servers and
//! HTTPS policy fetches. Certificates are always verified: against the system roots plus an
//! optional CA file named in the configuration.

pub mod client_keys;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

/// Reads every certificate in a PEM file.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut data.as_slice()).collect();
    let certs = certs.map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

/// The root store: the system's roots, plus the certificates of `extra_ca`.
pub fn root_store(extra_ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system root is skipped, not fatal.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        for cert in read_pem_certs(path)? {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
    }
    Ok(roots)
}

/// A client configuration that verifies servers against [`root_store`].
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(root_store(extra_ca)?)
        .with_no_client_auth();
    Ok(config)
}

/// The server side of TLS on an accepted connection, within `limit` (a client that stalls the
/// handshake is dropped): `None` when it failed or took too long.
pub async fn accept_within<S>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: S,
    limit: std::time::Duration,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(limit, acceptor.accept(stream))
        .await
        .ok()?
        .ok()
}

/// A server acceptor with the certificate chain and key from PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let (chain, key) = read_identity(cert, key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A certificate chain and its private key from PEM files.
fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    String,
> {
    let chain = read_pem_certs(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_bytes = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_bytes.as_slice())
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key", key.display()))?;
    Ok((chain, key))
}

/// A self-signed certificate for a localhost listener (`meshmail certs`): ECDSA P-256, for
/// `localhost` and `127.0.0.1`, ten years. Returns (certificate PEM, key PEM).
pub fn localhost_certificate() -> Result<(String, String), String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).map_err(|e| e.to_string())?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "meshmail on localhost");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// SHA-256 of a certificate's public key (its SubjectPublicKeyInfo, DER), upper-case hex:
/// what pins a device's TLS key (the certificate around it may be made again).
pub fn spki_sha256(cert_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Some(
        data_encoding::HEXUPPER
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki).as_ref()),
    )
}
