//! TLS configuration (rustls with aws-lc-rs): the client side used for upstream servers and
//! HTTPS policy fetches. Certificates are always verified: against the system roots plus an
//! optional CA file named in the configuration.

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
