//! S/MIME test messages made by `openssl cms`: EnvelopedData / AuthEnvelopedData for an
//! account, and SignedData (detached or opaque) by signers with certificates made by
//! `openssl req`.

use super::imap::{crlf, rand_suffix};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A signer: certificate and key files, and the certificate's SHA-256 fingerprint as openssl
/// prints it (upper-case hex, colons removed).
pub struct Signer {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub fingerprint: String,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A self-signed certificate naming `email`, with an RSA-2048 key or a P-256 key.
pub fn signer(dir: &Path, email: &str, ec: bool) -> Signer {
    let name = format!("signer-{}", rand_suffix());
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let newkey: &[&str] = if ec {
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    } else {
        &["-newkey", "rsa:2048"]
    };
    let san = format!("subjectAltName=email:{email}");
    let mut args = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=Signer",
    ];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-addext", &san, "-keyout", path(&key), "-out", path(&cert)]);
    openssl(&args);
    let printed = String::from_utf8(openssl(&[
        "x509",
        "-noout",
        "-fingerprint",
        "-sha256",
        "-in",
        path(&cert),
    ]))
    .expect("UTF-8");
    let fingerprint = printed
        .trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .replace(':', "");
    Signer {
        cert,
        key,
        fingerprint,
    }
}

/// `openssl cms -sign` over `content` (binary, SHA-256): a detached signature, or an opaque
/// SignedData carrying the content. DER.
pub fn sign(dir: &Path, signer: &Signer, content: &[u8], detached: bool) -> Vec<u8> {
    let f = dir.join(format!("to-sign-{}.eml", rand_suffix()));
    std::fs::write(&f, content).expect("write");
    let mut args = vec![
        "cms",
        "-sign",
        "-binary",
        "-md",
        "sha256",
        "-outform",
        "DER",
        "-signer",
        path(&signer.cert),
        "-inkey",
        path(&signer.key),
        "-in",
        path(&f),
    ];
    if !detached {
        args.push("-nodetach");
    }
    openssl(&args)
}

/// `openssl cms -encrypt` of `inner` for the certificate `cert` with `cipher` (`-aes256`,
/// `-aes-256-gcm`). DER.
pub fn encrypt(dir: &Path, inner: &[u8], cert: &Path, cipher: &str) -> Vec<u8> {
    let f = dir.join(format!("cms-{}.eml", rand_suffix()));
    std::fs::write(&f, inner).expect("write");
    openssl(&[
        "cms",
        "-encrypt",
        "-binary",
        cipher,
        "-outform",
        "DER",
        "-in",
        path(&f),
        path(cert),
    ])
}

/// Base64 in lines of 76 characters, each ending in CRLF.
pub fn base64_lines(der: &[u8]) -> Vec<u8> {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = Vec::new();
    for chunk in b64.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A stored S/MIME message: the outer header, then the encrypted object.
pub fn enveloped(outer: &str, der: &[u8], auth: bool) -> Vec<u8> {
    let kind = if auth {
        "authEnveloped-data"
    } else {
        "enveloped-data"
    };
    let mut m = crlf(outer);
    m.extend(crlf(&format!("Content-Type: application/pkcs7-mime; smime-type={kind}; name=\"smime.p7m\"\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")));
    m.extend(base64_lines(der));
    m
}

/// A `multipart/signed` (RFC 8551 §3.5.3) of `part` and the detached signature `der`.
pub fn multipart_signed(part: &[u8], der: &[u8]) -> Vec<u8> {
    let mut m = crlf("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sm\"\r\n\r\nThis is an S/MIME signed message\r\n--sm\r\n");
    m.extend_from_slice(part);
    m.extend(crlf("\r\n--sm\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"));
    m.extend(base64_lines(der));
    m.extend(crlf("\r\n--sm--\r\n"));
    m
}

/// An opaque-signed entity (RFC 8551 §3.5.2) carrying the SignedData `der`.
pub fn opaque_signed(der: &[u8]) -> Vec<u8> {
    let mut m = crlf("Content-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n");
    m.extend(base64_lines(der));
    m
}
