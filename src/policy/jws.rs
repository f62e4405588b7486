//! JWS compact serialization (RFC 7515) with EdDSA (RFC 8037), as meshmail's policies use it.
//!
//! Only what a policy needs is accepted: `alg` `EdDSA` (or its newer name `Ed25519`), `typ`
//! `mesh-policy+jws`, the signing key as an OKP/Ed25519 `jwk`, and `kid` = the key's UDF.
//! `crit`, `b64`, `jku` and `x5u` are refused: each would make the meaning of the signature
//! depend on something outside the three parts (RFC 7515 §4.1.11, RFC 7797, §4.1.2, §4.1.5).

use super::strict_json;
use crate::address::Udf;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use data_encoding::BASE64URL_NOPAD;
use serde_json::{json, Map, Value};
use thiserror::Error;

/// The `typ` of a meshmail policy.
pub const POLICY_TYP: &str = "mesh-policy+jws";
/// A JWS longer than this is refused before any parsing (a policy is about 4 KB).
pub const MAX_JWS_LEN: usize = 16 * 1024;

/// Why a JWS was refused, before any look at its payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwsError {
    #[error("JWS longer than {MAX_JWS_LEN} bytes")]
    TooLong,
    #[error("JWS compact serialization needs exactly three parts")]
    NotCompact,
    #[error("JWS part is not unpadded base64url")]
    Base64,
    #[error("JWS header is not a JSON object: {0}")]
    HeaderJson(String),
    #[error("JWS payload is not a JSON object: {0}")]
    PayloadJson(String),
    #[error("algorithm {0:?} refused; only EdDSA/Ed25519 is accepted")]
    Algorithm(String),
    #[error("typ {0:?} is not {POLICY_TYP}")]
    Type(String),
    #[error("header {0:?} is refused")]
    RefusedHeader(&'static str),
    #[error("jwk missing or not an Ed25519 OKP key: {0}")]
    Key(&'static str),
    #[error("kid does not name the jwk's UDF")]
    KidMismatch,
    #[error("signature does not verify")]
    Signature,
}

/// A JWS whose signature verified under the key it carries. Nothing here says the key is the
/// right one: that is [`super::verify`]'s job (fingerprint against the address).
#[derive(Debug, Clone)]
pub struct VerifiedJws {
    /// The Ed25519 public key from `jwk`.
    pub public_key: [u8; 32],
    /// The payload bytes (JSON, duplicate keys already refused).
    pub payload: Vec<u8>,
}

/// Signs `payload` (a JSON document) with `key`, in compact serialization.
pub fn sign(payload: &[u8], key: &Ed25519KeyPair) -> String {
    let public: &[u8] = key.public_key().as_ref();
    let udf = Udf::of_ed25519_key(
        public.try_into().unwrap_or(&[0u8; 32]),
        crate::address::udf::DEFAULT_BITS,
    );
    let header = json!({
        "alg": "EdDSA",
        "typ": POLICY_TYP,
        "kid": udf.to_string(),
        "jwk": { "kty": "OKP", "crv": "Ed25519", "x": BASE64URL_NOPAD.encode(public) },
    });
    let signing_input = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(payload)
    );
    let signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        BASE64URL_NOPAD.encode(signature.as_ref())
    )
}

/// Why a JWS was refused by [`verify_with_key_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheckError {
    /// The form or the signature is wrong.
    Jws(JwsError),
    /// The key is well formed but the caller's check refused it.
    KeyRefused,
}

/// Checks the form and the signature of a compact JWS.
pub fn verify(jws: &str) -> Result<VerifiedJws, JwsError> {
    verify_with_key_check(jws, |_| true).map_err(|e| match e {
        KeyCheckError::Jws(e) => e,
        KeyCheckError::KeyRefused => JwsError::Signature,
    })
}

/// Checks the form of a compact JWS, then asks `key_ok` about the signing key (the fingerprint
/// check), then verifies the signature: a policy signed by another key is reported as such
/// even when its signature is fine.
pub fn verify_with_key_check(
    jws: &str,
    key_ok: impl Fn(&[u8; 32]) -> bool,
) -> Result<VerifiedJws, KeyCheckError> {
    let public_key = parse_and_key(jws).map_err(KeyCheckError::Jws)?;
    if !key_ok(&public_key) {
        return Err(KeyCheckError::KeyRefused);
    }
    verify_signature(jws, public_key).map_err(KeyCheckError::Jws)
}

fn split(jws: &str) -> Result<[&str; 3], JwsError> {
    let jws = jws.trim();
    if jws.len() > MAX_JWS_LEN {
        return Err(JwsError::TooLong);
    }
    let parts: Vec<&str> = jws.split('.').collect();
    match parts.as_slice() {
        [h, p, s] => Ok([*h, *p, *s]),
        _ => Err(JwsError::NotCompact),
    }
}

fn b64(s: &str) -> Result<Vec<u8>, JwsError> {
    BASE64URL_NOPAD
        .decode(s.as_bytes())
        .map_err(|_| JwsError::Base64)
}

/// Parses the header and returns the key it names.
fn parse_and_key(jws: &str) -> Result<[u8; 32], JwsError> {
    let [header_b64, payload_b64, signature_b64] = split(jws)?;
    let header_bytes = b64(header_b64)?;
    b64(payload_b64)?;
    b64(signature_b64)?;
    strict_json::check(&header_bytes).map_err(JwsError::HeaderJson)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header_bytes).map_err(|e| JwsError::HeaderJson(e.to_string()))?;
    check_header(&header)?;
    let public_key = header_key(&header)?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwsError::KidMismatch)?;
    let kid = Udf::parse(kid).map_err(|_| JwsError::KidMismatch)?;
    if !kid.matches(&Udf::of_ed25519_key(&public_key, kid.bits())) {
        return Err(JwsError::KidMismatch);
    }
    Ok(public_key)
}

fn verify_signature(jws: &str, public_key: [u8; 32]) -> Result<VerifiedJws, JwsError> {
    let [header_b64, payload_b64, signature_b64] = split(jws)?;
    let payload = b64(payload_b64)?;
    let signature = b64(signature_b64)?;
    let signing_input = format!("{header_b64}.{payload_b64}");
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| JwsError::Signature)?;
    strict_json::check(&payload).map_err(JwsError::PayloadJson)?;
    Ok(VerifiedJws {
        public_key,
        payload,
    })
}

fn check_header(header: &Map<String, Value>) -> Result<(), JwsError> {
    match header.get("alg").and_then(Value::as_str) {
        Some("EdDSA") | Some("Ed25519") => {}
        Some(other) => return Err(JwsError::Algorithm(other.to_owned())),
        None => return Err(JwsError::Algorithm(String::new())),
    }
    for refused in ["crit", "b64", "jku", "x5u"] {
        if header.contains_key(refused) {
            return Err(JwsError::RefusedHeader(refused));
        }
    }
    match header.get("typ").and_then(Value::as_str) {
        Some(POLICY_TYP) => Ok(()),
        other => Err(JwsError::Type(other.unwrap_or_default().to_owned())),
    }
}

fn header_key(header: &Map<String, Value>) -> Result<[u8; 32], JwsError> {
    let jwk = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(JwsError::Key("no jwk object"))?;
    if jwk.get("kty").and_then(Value::as_str) != Some("OKP") {
        return Err(JwsError::Key("kty is not OKP"));
    }
    if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err(JwsError::Key("crv is not Ed25519"));
    }
    if jwk.contains_key("d") {
        // A private key in a published document is a sign of a broken publisher.
        return Err(JwsError::Key("jwk carries a private key"));
    }
    let x = jwk
        .get("x")
        .and_then(Value::as_str)
        .ok_or(JwsError::Key("no x"))?;
    let x = BASE64URL_NOPAD
        .decode(x.as_bytes())
        .map_err(|_| JwsError::Key("x is not base64url"))?;
    x.try_into().map_err(|_| JwsError::Key("x is not 32 bytes"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;

    pub(crate) fn test_key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    /// Builds a JWS with an arbitrary header, signed by `key`.
    pub(crate) fn sign_with_header(header: &Value, payload: &[u8], key: &Ed25519KeyPair) -> String {
        let input = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
            BASE64URL_NOPAD.encode(payload)
        );
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", BASE64URL_NOPAD.encode(sig.as_ref()))
    }

    fn good_header(key: &Ed25519KeyPair) -> Value {
        let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        json!({
            "alg": "EdDSA", "typ": POLICY_TYP,
            "kid": Udf::of_ed25519_key(&public, 140).to_string(),
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": BASE64URL_NOPAD.encode(&public)},
        })
    }

    #[test]
    fn sign_then_verify() {
        let key = test_key();
        let jws = sign(br#"{"a":1}"#, &key);
        let v = verify(&jws).unwrap();
        assert_eq!(v.payload, br#"{"a":1}"#);
        assert_eq!(&v.public_key[..], key.public_key().as_ref());
        // The newer algorithm name is accepted too.
        let mut h = good_header(&key);
        h["alg"] = json!("Ed25519");
        assert!(verify(&sign_with_header(&h, b"{}", &key)).is_ok());
    }

    #[test]
    fn header_refusals() {
        let key = test_key();
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Edit, JwsError)> = vec![
            (
                Box::new(|h| h["alg"] = json!("none")),
                JwsError::Algorithm("none".into()),
            ),
            (
                Box::new(|h| h["alg"] = json!("ES256")),
                JwsError::Algorithm("ES256".into()),
            ),
            (
                Box::new(|h| h["alg"] = json!("HS256")),
                JwsError::Algorithm("HS256".into()),
            ),
            (
                Box::new(|h| h["crit"] = json!(["exp"])),
                JwsError::RefusedHeader("crit"),
            ),
            (
                Box::new(|h| h["b64"] = json!(false)),
                JwsError::RefusedHeader("b64"),
            ),
            (
                Box::new(|h| h["jku"] = json!("https://x/")),
                JwsError::RefusedHeader("jku"),
            ),
            (
                Box::new(|h| h["x5u"] = json!("https://x/")),
                JwsError::RefusedHeader("x5u"),
            ),
            (
                Box::new(|h| h["typ"] = json!("JWT")),
                JwsError::Type("JWT".into()),
            ),
            (
                Box::new(|h| h["jwk"]["crv"] = json!("X25519")),
                JwsError::Key("crv is not Ed25519"),
            ),
            (
                Box::new(|h| h["jwk"]["crv"] = json!("Ed448")),
                JwsError::Key("crv is not Ed25519"),
            ),
            (
                Box::new(|h| h["jwk"]["kty"] = json!("EC")),
                JwsError::Key("kty is not OKP"),
            ),
            (
                Box::new(|h| h["kid"] = json!("MDDK-7N6A-727A-JZNO-STRX-XKS7")),
                JwsError::KidMismatch,
            ),
        ];
        for (edit, want) in cases {
            let mut h = good_header(&key);
            edit(&mut h);
            assert_eq!(
                verify(&sign_with_header(&h, b"{}", &key)).unwrap_err(),
                want
            );
        }
    }

    #[test]
    fn duplicate_header_key_refused() {
        let key = test_key();
        let h = good_header(&key).to_string();
        let dup = h.replacen('{', r#"{"alg":"EdDSA","#, 1);
        let input = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(dup.as_bytes()),
            BASE64URL_NOPAD.encode(b"{}")
        );
        let sig = key.sign(input.as_bytes());
        let jws = format!("{input}.{}", BASE64URL_NOPAD.encode(sig.as_ref()));
        assert!(matches!(verify(&jws), Err(JwsError::HeaderJson(e)) if e.contains("duplicate")));
    }

    #[test]
    fn tampering_refused() {
        let key = test_key();
        let jws = sign(br#"{"a":1}"#, &key);
        let parts: Vec<&str> = jws.split('.').collect();
        // Another payload under the same signature.
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            BASE64URL_NOPAD.encode(br#"{"a":2}"#),
            parts[2]
        );
        assert_eq!(verify(&forged).unwrap_err(), JwsError::Signature);
        // Another key's jwk with the first key's signature.
        let other = test_key();
        let forged = sign_with_header(&good_header(&other), br#"{"a":1}"#, &key);
        assert_eq!(verify(&forged).unwrap_err(), JwsError::Signature);
        assert_eq!(verify("a.b").unwrap_err(), JwsError::NotCompact);
        assert_eq!(verify(&format!("{jws}=")).unwrap_err(), JwsError::Base64);
        assert_eq!(
            verify(&"a".repeat(MAX_JWS_LEN + 1)).unwrap_err(),
            JwsError::TooLong
        );
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(text in "[A-Za-z0-9_.=-]{0,400}") {
            let _ = verify(&text);
        }

        #[test]
        fn verify_never_panics_on_any_json_header(header in "\\PC{0,200}", payload in "\\PC{0,200}") {
            let key = test_key();
            let input = format!(
                "{}.{}",
                BASE64URL_NOPAD.encode(header.as_bytes()),
                BASE64URL_NOPAD.encode(payload.as_bytes())
            );
            let sig = key.sign(input.as_bytes());
            let _ = verify(&format!("{input}.{}", BASE64URL_NOPAD.encode(sig.as_ref())));
        }
    }
}
