//! TLS client keys, both ends: the store asks every client for a certificate (none is
//! required: plain clients pass through), checks only that the client holds the certificate's
//! key, and leaves trust to the login step, which compares the key's hash with the one pinned
//! in an unrevoked share record. No CA, no CRL: deleting the record is the revocation.
//! A device presents its own self-signed certificate to the store it pins.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// Accepts any client certificate whose key signs the handshake; asks, never requires.
#[derive(Debug)]
struct AnyClientKey {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Only a certificate whose key can be pinned is taken.
        super::spki_sha256(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server acceptor (certificate and key from PEM files) that asks clients for a certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let (chain, key) = super::read_identity(cert, key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyClientKey {
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The pin (SPKI SHA-256) of the client's certificate on an accepted connection.
pub fn peer_key<S>(tls: &tokio_rustls::server::TlsStream<S>) -> Option<String> {
    let (_, connection) = tls.get_ref();
    let cert = connection.peer_certificates()?.first()?;
    super::spki_sha256(cert)
}

/// A device's client identity: its certificate and key (PKCS#8 DER).
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    pub fn new(cert_pem: &Path, pkcs8: &[u8]) -> Result<ClientIdentity, String> {
        let chain = super::read_pem_certs(cert_pem)?;
        Ok(ClientIdentity {
            chain,
            key: PrivateKeyDer::Pkcs8(pkcs8.to_vec().into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn write_identity(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let c = dir.join(format!("{name}.pem"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    async fn connect(
        acceptor: tokio_rustls::TlsAcceptor,
        server_cert: &Path,
        identity: Option<ClientIdentity>,
    ) -> Option<String> {
        let config =
            crate::upstream::client_config_with_identity(Some(server_cert), &[], identity).unwrap();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let serve = tokio::spawn(async move {
            let mut tls = acceptor.accept(server).await.ok()?;
            let key = peer_key(&tls);
            tls.write_all(b"ok").await.ok()?;
            tls.flush().await.ok()?;
            Some(key)
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, client).await.unwrap();
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await.unwrap();
        serve.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_client_key_is_asked_for_not_required_and_its_hash_is_what_the_store_sees() {
        let dir = tempfile::tempdir().unwrap();
        let (server_cert, server_key) = write_identity(dir.path(), "server");
        let acceptor = acceptor(&server_cert, &server_key).unwrap();
        // A plain client without a certificate gets through, with no key.
        assert_eq!(connect(acceptor.clone(), &server_cert, None).await, None);
        // A device's certificate: its SPKI hash.
        let (device_cert, device_key) = write_identity(dir.path(), "device");
        let pem = std::fs::read(&device_key).unwrap();
        let pkcs8 = rustls_pemfile::private_key(&mut pem.as_slice())
            .unwrap()
            .unwrap()
            .secret_der()
            .to_vec();
        let identity = ClientIdentity::new(&device_cert, &pkcs8).unwrap();
        let expected = super::super::spki_sha256(identity.chain[0].as_ref());
        assert!(expected.is_some());
        assert_eq!(
            connect(acceptor, &server_cert, Some(identity)).await,
            expected
        );
    }
}
