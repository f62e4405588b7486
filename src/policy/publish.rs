//! `meshmail policy publish`: everything a domain needs to publish for the account.
//!
//! ```text
//! OUT/zone.txt                                        zone-file lines, one record per line,
//!                                                     owner names fully qualified:
//!                                                     TXT _mmm, OPENPGPKEY, SMIMEA
//! OUT/https/<domain>/.well-known/mmm-udf/<UDF>        the signed policy (application/jose)
//! OUT/https/<domain>/.well-known/openpgpkey/…         WKD, direct method
//! OUT/https/openpgpkey.<domain>/.well-known/openpgpkey/<domain>/…   WKD, advanced method
//! ```
//! Each directory under `OUT/https/` is the document root of the host it is named after.

use super::resolve::wkd_hash;
use crate::address::udf::DEFAULT_BITS;
use crate::keys::{Account, KeyError};
use aws_lc_rs::digest::{digest, SHA256};
use data_encoding::{BASE64, HEXLOWER, HEXUPPER};
use std::fs;
use std::path::{Path, PathBuf};

/// TTL written on the zone lines.
pub const ZONE_TTL: u32 = 3600;
/// RFC 1035 §3.3.14: one character-string holds at most 255 octets.
const TXT_STRING_MAX: usize = 255;

/// What was written, for the command to report.
#[derive(Debug)]
pub struct Publication {
    pub zone_lines: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// Writes the zone lines and the HTTPS files for `account` under `out`.
pub fn publish(account: &Account, out: &Path) -> Result<Publication, KeyError> {
    let jws = account.policy_jws()?;
    let cert = account.openpgp_cert()?;
    let cert_bytes = crate::crypto::openpgp::public_bytes(&cert);
    let smime_der = account.smime_cert_der()?;
    let (local, domain) = account
        .address()
        .rsplit_once('@')
        .ok_or_else(|| KeyError::Corrupt("account address".into()))?;
    let udf = account.policy_udf(DEFAULT_BITS)?;
    let local_hash = HEXLOWER.encode(&digest(&SHA256, local.as_bytes()).as_ref()[..28]);

    let zone_lines = vec![
        format!(
            "{}._mmm.{domain}. {ZONE_TTL} IN TXT {}",
            udf.dns_label(),
            txt_strings(&jws)
        ),
        format!(
            "{local_hash}._openpgpkey.{domain}. {ZONE_TTL} IN OPENPGPKEY {}",
            BASE64.encode(&cert_bytes)
        ),
        format!(
            "{local_hash}._smimecert.{domain}. {ZONE_TTL} IN SMIMEA 3 0 0 {}",
            HEXUPPER.encode(&smime_der)
        ),
    ];

    let hu = wkd_hash(local);
    let advanced_root = out.join("https").join(format!("openpgpkey.{domain}"));
    let direct_root = out.join("https").join(domain);
    let files: Vec<(PathBuf, Vec<u8>)> = vec![
        (
            out.join("zone.txt"),
            (zone_lines.join("\n") + "\n").into_bytes(),
        ),
        (
            direct_root
                .join(".well-known/mmm-udf")
                .join(udf.well_known_name()),
            jws.clone().into_bytes(),
        ),
        (
            direct_root.join(".well-known/openpgpkey/hu").join(&hu),
            cert_bytes.clone(),
        ),
        (
            direct_root.join(".well-known/openpgpkey/policy"),
            Vec::new(),
        ),
        (
            advanced_root
                .join(".well-known/openpgpkey")
                .join(domain)
                .join("hu")
                .join(&hu),
            cert_bytes,
        ),
        (
            advanced_root
                .join(".well-known/openpgpkey")
                .join(domain)
                .join("policy"),
            Vec::new(),
        ),
    ];
    for (path, bytes) in &files {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| KeyError::io(parent, e))?;
        }
        fs::write(path, bytes).map_err(|e| KeyError::io(path, e))?;
    }
    Ok(Publication {
        zone_lines,
        files: files.into_iter().map(|(p, _)| p).collect(),
    })
}

/// A TXT record's data: quoted strings of at most 255 octets (the JWS alphabet needs no
/// escaping).
fn txt_strings(text: &str) -> String {
    text.as_bytes()
        .chunks(TXT_STRING_MAX)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::txt_strings;

    #[test]
    fn txt_strings_are_at_most_255_octets() {
        let text = "a".repeat(600);
        let out = txt_strings(&text);
        let parts: Vec<&str> = out.split(' ').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), 257);
        assert_eq!(parts[2].len(), 90 + 2);
    }
}
