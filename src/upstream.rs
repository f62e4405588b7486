//! What the SMTP and IMAP upstreams share: where and how to connect ([`UpstreamTarget`]), the
//! TLS handshake, and how the server's certificate is trusted.
//!
//! A certificate is trusted when it chains to the system roots or to a CA in `upstream_ca`, or
//! when it is pinned: the server's own certificate named in `upstream_ca` (exact match; a
//! self-signed certificate made by `openssl req -x509` is marked as a CA, which WebPKI refuses
//! as an end entity), or its SHA-256 digest given as `upstream_fingerprint = "sha256:…"`. The
//! server must still prove it holds the certificate's key in the handshake.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How meshmail reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    /// Submission on 587: plaintext, then STARTTLS (required).
    Starttls,
    /// Submissions on 465: TLS from the first byte.
    Implicit,
    /// No TLS: allowed for a loopback upstream only (checked by the configuration).
    None,
}

/// Where and how to connect.
#[derive(Clone)]
pub struct UpstreamTarget {
    /// `host:port`.
    pub address: String,
    pub tls: UpstreamTls,
    pub tls_config: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
    pub hello_name: String,
}

/// Why the upstream could not be used: always temporary for the client (`421`/`451`).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream server: {0}")]
    Connect(String),
    #[error("upstream TLS failed: {0}")]
    Tls(String),
    #[error("the upstream server does not offer STARTTLS")]
    NoStartTls,
    #[error("upstream connection failed: {0}")]
    Broken(String),
}

/// TCP to the target within its timeout, Nagle off (commands and replies are small).
pub(crate) async fn connect_tcp(
    target: &UpstreamTarget,
) -> Result<tokio::net::TcpStream, UpstreamError> {
    let tcp = tokio::time::timeout(
        target.timeout,
        tokio::net::TcpStream::connect(&target.address),
    )
    .await
    .map_err(|_| UpstreamError::Connect("timed out".into()))?
    .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Longest line meshmail reads before the relay starts (greetings, STARTTLS/STLS and
/// CAPABILITY replies).
const MAX_SETUP_LINE: usize = 64 * 1024;

/// Writes within the step's timeout (setting up an upstream, before the relay starts).
pub(crate) async fn write<S: tokio::io::AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    bytes: &[u8],
    t: Duration,
) -> Result<(), UpstreamError> {
    tokio::time::timeout(t, s.write_all(bytes))
        .await
        .map_err(|_| UpstreamError::Broken("timed out".into()))?
        .map_err(|e| UpstreamError::Broken(e.to_string()))
}

/// Reads one line byte by byte, so that nothing after it is consumed (the STARTTLS switch
/// must happen exactly at the end of the reply).
pub(crate) async fn read_line<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    t: Duration,
) -> Result<String, UpstreamError> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(t, s.read(&mut b))
            .await
            .map_err(|_| UpstreamError::Broken("timed out".into()))?
            .map_err(|e| UpstreamError::Broken(e.to_string()))?;
        if n == 0 {
            return Err(UpstreamError::Broken("connection closed".into()));
        }
        line.push(b[0]);
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        if line.len() > MAX_SETUP_LINE {
            return Err(UpstreamError::Broken("line too long".into()));
        }
    }
}

/// A SHA-256 digest of a DER certificate: a pin.
pub type CertPin = [u8; 32];

/// Parses `sha256:<64 hex digits>` (colons between bytes allowed, any case).
pub fn parse_pin(text: &str) -> Result<CertPin, String> {
    let hex = text
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("{text:?}: a pin is \"sha256:\" and 64 hex digits"))?
        .replace(':', "")
        .to_ascii_lowercase();
    let bytes = data_encoding::HEXLOWER
        .decode(hex.as_bytes())
        .map_err(|_| format!("{text:?}: not hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{text:?}: a SHA-256 digest has 32 bytes"))
}

/// The pin of a certificate.
pub fn pin_of(cert: &CertificateDer<'_>) -> CertPin {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    let mut pin = [0u8; 32];
    pin.copy_from_slice(d.as_ref());
    pin
}

/// WebPKI verification, except that a pinned end-entity certificate is accepted as it is.
#[derive(Debug)]
struct PinningVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pins: Vec<CertPin>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pins.contains(&pin_of(end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The client configuration for an upstream: system roots plus `extra_ca` (whose
/// certificates are also pins), and the `fingerprints` given in the configuration.
pub fn client_config(
    extra_ca: Option<&std::path::Path>,
    fingerprints: &[CertPin],
) -> Result<rustls::ClientConfig, String> {
    client_config_with_identity(extra_ca, fingerprints, None)
}

/// [`client_config`], presenting `identity` when the server asks for a client certificate (a
/// device to its store).
pub fn client_config_with_identity(
    extra_ca: Option<&std::path::Path>,
    fingerprints: &[CertPin],
    identity: Option<crate::tls::client_keys::ClientIdentity>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut pins = fingerprints.to_vec();
    if let Some(path) = extra_ca {
        pins.extend(crate::tls::read_pem_certs(path)?.iter().map(pin_of));
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(
        Arc::new(crate::tls::root_store(extra_ca)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinningVerifier { webpki, pins }));
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| e.to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// TLS to the upstream, its certificate verified for the host of `target.address` (SMTP and
/// IMAP).
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    target: &UpstreamTarget,
    stream: S,
) -> Result<tokio_rustls::client::TlsStream<S>, UpstreamError> {
    let host = target
        .address
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(&target.address)
        .to_owned();
    let name = ServerName::try_from(host).map_err(|e| UpstreamError::Tls(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(target.tls_config.clone());
    tokio::time::timeout(target.timeout, connector.connect(name, stream))
        .await
        .map_err(|_| UpstreamError::Tls("handshake timed out".into()))?
        .map_err(|e| UpstreamError::Tls(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate marked as a CA, as `openssl req -x509` makes by default.
    fn ca_flagged_self_signed() -> (
        CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (
            cert.der().clone(),
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    /// Handshakes with an in-process rustls server offering `cert`, trusting as `config` says.
    async fn handshake_with(
        served: (
            CertificateDer<'static>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
        config: rustls::ClientConfig,
    ) -> Result<(), UpstreamError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![served.0], served.1)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let serve = tokio::spawn(async move {
            if let Ok(mut tls) = acceptor.accept(server).await {
                let _ = tls.write_all(b"hello").await;
                let _ = tls.flush().await;
            }
        });
        let target = UpstreamTarget {
            address: "localhost:1".into(),
            tls: UpstreamTls::Implicit,
            tls_config: Arc::new(config),
            timeout: Duration::from_secs(5),
            hello_name: "localhost".into(),
        };
        let result = match handshake(&target, client).await {
            Ok(mut tls) => {
                let mut buf = [0u8; 5];
                tls.read_exact(&mut buf)
                    .await
                    .map_err(|e| UpstreamError::Broken(e.to_string()))?;
                assert_eq!(&buf, b"hello");
                Ok(())
            }
            Err(e) => Err(e),
        };
        let _ = serve.await;
        result
    }

    #[tokio::test]
    async fn a_self_signed_ca_flagged_upstream_is_pinned_by_file_or_fingerprint() {
        let served = ca_flagged_self_signed();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("upstream.pem");
        std::fs::write(
            &pem,
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                data_encoding::BASE64_MIME.encode(served.0.as_ref())
            ),
        )
        .unwrap();
        // Named in upstream_ca: the server's own certificate, pinned.
        let by_file = client_config(Some(&pem), &[]).unwrap();
        handshake_with(served.clone_key(), by_file).await.unwrap();
        // Its digest as upstream_fingerprint.
        let pin = parse_pin(&format!(
            "sha256:{}",
            data_encoding::HEXUPPER.encode(&pin_of(&served.0))
        ))
        .unwrap();
        let by_pin = client_config(None, &[pin]).unwrap();
        handshake_with(served.clone_key(), by_pin).await.unwrap();
        // Another certificate with the same name is refused.
        let other = ca_flagged_self_signed();
        let e = handshake_with(other, client_config(Some(&pem), &[pin]).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, UpstreamError::Tls(_)), "{e}");
        // Neither pinned nor trusted: refused.
        let e = handshake_with(served, client_config(None, &[]).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, UpstreamError::Tls(_)), "{e}");
        assert!(parse_pin("sha1:00").is_err());
        assert!(parse_pin("sha256:0011").is_err());
    }

    trait CloneKey {
        fn clone_key(&self) -> Self;
    }

    impl CloneKey
        for (
            CertificateDer<'static>,
            rustls::pki_types::PrivateKeyDer<'static>,
        )
    {
        fn clone_key(&self) -> Self {
            (self.0.clone(), self.1.clone_key())
        }
    }
}
