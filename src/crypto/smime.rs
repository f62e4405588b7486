//! S/MIME (X.509) certificates: reading what a policy carries and checking that a certificate
//! can receive mail for an address now.

use thiserror::Error;
use x509_parser::prelude::*;

/// At most this many certificates are read from one policy.
pub const MAX_CERTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SmimeCertError {
    #[error("not a DER X.509 certificate: {0}")]
    Parse(String),
    #[error("more than {MAX_CERTS} certificates")]
    TooMany,
    #[error("certificate is not valid now (notBefore/notAfter)")]
    OutsideValidity,
    #[error("certificate does not name {0} in its subjectAltName")]
    AddressMissing(String),
    #[error("certificate key is not RSA (meshmail encrypts S/MIME to RSA keys)")]
    NotRsa,
}

/// A parsed S/MIME certificate, kept as its DER bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SmimeCert {
    der: Vec<u8>,
    subject: String,
    emails: Vec<String>,
    not_after: i64,
}

impl std::fmt::Debug for SmimeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmimeCert({})", self.subject)
    }
}

impl SmimeCert {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<SmimeCert, SmimeCertError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| SmimeCertError::Parse(e.to_string()))?;
        let used = der.len() - rest.len();
        let mut emails = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::RFC822Name(email) = name {
                    emails.push(email.to_string());
                }
            }
        }
        if cert.public_key().algorithm.algorithm
            != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
        {
            return Err(SmimeCertError::NotRsa);
        }
        Ok(SmimeCert {
            der: der[..used].to_vec(),
            subject: cert.subject().to_string(),
            emails,
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Reads DER certificates written one after another.
    pub fn parse_concatenated(mut der: &[u8]) -> Result<Vec<SmimeCert>, SmimeCertError> {
        let mut out = Vec::new();
        while !der.is_empty() {
            let cert = SmimeCert::from_der(der)?;
            der = &der[cert.der.len()..];
            out.push(cert);
            if out.len() > MAX_CERTS {
                return Err(SmimeCertError::TooMany);
            }
        }
        if out.is_empty() {
            return Err(SmimeCertError::Parse("no certificate".into()));
        }
        Ok(out)
    }

    /// Checks the validity period and that the certificate names `address` (compared
    /// case-insensitively, as mail software compares certificate addresses).
    pub fn check_for(&self, address: &str, now_unix: i64) -> Result<(), SmimeCertError> {
        let (_, cert) = X509Certificate::from_der(&self.der)
            .map_err(|e| SmimeCertError::Parse(e.to_string()))?;
        let v = cert.validity();
        if now_unix < v.not_before.timestamp() || now_unix > v.not_after.timestamp() {
            return Err(SmimeCertError::OutsideValidity);
        }
        if !self.emails.iter().any(|e| e.eq_ignore_ascii_case(address)) {
            return Err(SmimeCertError::AddressMissing(address.to_owned()));
        }
        Ok(())
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn emails(&self) -> &[String] {
        &self.emails
    }

    /// notAfter, as Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// SHA-256 of the DER, upper-case hex (what `openssl x509 -fingerprint -sha256` prints,
    /// without colons).
    pub fn sha256_hex(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.der);
        data_encoding::HEXUPPER.encode(d.as_ref())
    }
}
