//! UDF (Uniform Data Fingerprint), content-digest form, as in draft-hallambaker-mesh-udf and
//! `shared/reference/mesh-formats.md` §1.
//!
//! ```text
//! CDV  = SHA-512(data)
//! TCDV = SHA-512(UTF8(content_type) || ":" || CDV)
//! bin  = [type] || TCDV[.. nbytes-1]          nbytes = ceil(bits / 8), bits count the type byte
//! text = Base32(bin) cut to ceil(bits / 5) characters, '-' after every 4
//! ```
//!
//! A [`Udf`] keeps its Base32 symbols (upper case, no dashes). A shorter UDF is a prefix of a
//! longer one, so comparing two UDFs means comparing their symbols down to the shorter one's
//! precision ([`Udf::matches`]).

use aws_lc_rs::digest::{digest, SHA512};
use std::fmt;
use thiserror::Error;

/// The type byte meshmail emits: SHA-512, uncompressed (Base32 letter `M`).
pub const TYPE_SHA512: u8 = 96;
/// The highest SHA-512 type byte accepted when parsing (97..=100 mark "compression").
const TYPE_SHA512_LAST: u8 = 100;
/// Default precision: 140 bits, 28 characters, 7 groups of 4.
pub const DEFAULT_BITS: usize = 140;
/// meshmail refuses fingerprints shorter than this (24 characters).
pub const MIN_BITS: usize = 120;
/// Lookup names use the first 24 characters (120 bits), so that addresses written at different
/// precisions find the same record.
pub const CANONICAL_CHARS: usize = 24;
/// The most a SHA-512 UDF can hold: the type byte and 64 digest bytes (520 bits).
pub const MAX_CHARS: usize = 104;
/// Content type of a key fingerprint: the RFC 8410 SubjectPublicKeyInfo DER of the key.
pub const KEY_CONTENT_TYPE: &str = "application/pkix-keyinfo";

/// RFC 8410 SubjectPublicKeyInfo prefix of an Ed25519 public key (followed by the 32 key bytes).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00,
];

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why a text is not a UDF.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UdfError {
    #[error("empty fingerprint")]
    Empty,
    #[error("character {0:?} is not Base32 (A-Z, 2-7)")]
    BadCharacter(char),
    #[error("dashes must separate groups of 4 characters")]
    BadGrouping,
    #[error("fingerprint has {0} bits; at least {MIN_BITS} are required")]
    TooShort(usize),
    #[error("fingerprint has {0} characters; at most {MAX_CHARS} are possible")]
    TooLong(usize),
    #[error("type byte {0} is not a SHA-512 UDF (96..=100)")]
    UnknownType(u8),
}

/// A UDF content digest at some precision.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Udf {
    /// Base32 symbols, upper case, no dashes.
    symbols: String,
}

impl Udf {
    /// The content digest of `data` under `content_type`, `bits` long, with type byte 96.
    pub fn content_digest(data: &[u8], content_type: &str, bits: usize) -> Udf {
        Self::content_digest_typed(data, content_type, bits, TYPE_SHA512)
    }

    /// As [`Udf::content_digest`] with an explicit SHA-512 type byte (96..=100); the type byte
    /// only changes the first octet, never the digest bits.
    pub fn content_digest_typed(
        data: &[u8],
        content_type: &str,
        bits: usize,
        type_byte: u8,
    ) -> Udf {
        let bits = bits.clamp(8, MAX_CHARS * 5);
        let cdv = digest(&SHA512, data);
        let mut inner = Vec::with_capacity(content_type.len() + 1 + 64);
        inner.extend_from_slice(content_type.as_bytes());
        inner.push(b':');
        inner.extend_from_slice(cdv.as_ref());
        let tcdv = digest(&SHA512, &inner);
        let nbytes = bits.div_ceil(8);
        let mut bin = Vec::with_capacity(nbytes);
        bin.push(type_byte);
        bin.extend_from_slice(&tcdv.as_ref()[..nbytes - 1]);
        let chars = bits.div_ceil(5);
        let mut symbols = base32(&bin);
        symbols.truncate(chars);
        Udf { symbols }
    }

    /// The key fingerprint of an Ed25519 public key: the content digest of its RFC 8410
    /// SubjectPublicKeyInfo DER under `application/pkix-keyinfo`.
    pub fn of_ed25519_key(public_key: &[u8; 32], bits: usize) -> Udf {
        let mut spki = Vec::with_capacity(44);
        spki.extend_from_slice(&ED25519_SPKI_PREFIX);
        spki.extend_from_slice(public_key);
        Self::content_digest(&spki, KEY_CONTENT_TYPE, bits)
    }

    /// Parses a UDF written with or without dashes, in any case. Where dashes appear they must
    /// separate groups of exactly 4 characters.
    pub fn parse(text: &str) -> Result<Udf, UdfError> {
        if text.contains('-') {
            Self::parse_grouped(text)
        } else {
            Self::from_symbols(text)
        }
    }

    /// Parses a UDF that must be written with its dashes (groups of 4), as in an address label.
    pub fn parse_grouped(text: &str) -> Result<Udf, UdfError> {
        let groups: Vec<&str> = text.split('-').collect();
        let (last, full) = groups.split_last().ok_or(UdfError::Empty)?;
        if full.iter().any(|g| g.chars().count() != 4)
            || last.is_empty()
            || last.chars().count() > 4
        {
            return Err(UdfError::BadGrouping);
        }
        Self::from_symbols(&groups.concat())
    }

    fn from_symbols(text: &str) -> Result<Udf, UdfError> {
        if text.is_empty() {
            return Err(UdfError::Empty);
        }
        if let Some(bad) = text.chars().find(|c| symbol_value(*c).is_none()) {
            return Err(UdfError::BadCharacter(bad));
        }
        if text.len() > MAX_CHARS {
            return Err(UdfError::TooLong(text.len()));
        }
        if text.len() * 5 < MIN_BITS {
            return Err(UdfError::TooShort(text.len() * 5));
        }
        let udf = Udf {
            symbols: text.to_ascii_uppercase(),
        };
        let type_byte = udf.type_byte();
        if !(TYPE_SHA512..=TYPE_SHA512_LAST).contains(&type_byte) {
            return Err(UdfError::UnknownType(type_byte));
        }
        Ok(udf)
    }

    /// The type byte, read from the first two symbols (10 bits, of which the first 8 count).
    pub fn type_byte(&self) -> u8 {
        let mut sym = self.symbols.chars().filter_map(symbol_value);
        let hi = sym.next().unwrap_or(0);
        let lo = sym.next().unwrap_or(0);
        (hi << 3) | (lo >> 2)
    }

    /// Precision in bits (5 per character).
    pub fn bits(&self) -> usize {
        self.symbols.len() * 5
    }

    /// The Base32 symbols, upper case, without dashes.
    pub fn symbols(&self) -> &str {
        &self.symbols
    }

    /// True when both UDFs agree down to the shorter one's precision.
    pub fn matches(&self, other: &Udf) -> bool {
        let n = self.symbols.len().min(other.symbols.len());
        self.symbols.as_bytes()[..n] == other.symbols.as_bytes()[..n]
    }

    /// This UDF cut to `bits` (no-op when it is already shorter).
    pub fn truncated(&self, bits: usize) -> Udf {
        let chars = bits.div_ceil(5).min(self.symbols.len());
        Udf {
            symbols: self.symbols[..chars].to_owned(),
        }
    }

    /// The DNS lookup label: the first 24 characters, lower case, no dashes
    /// (`<this>._mmm.<domain>`).
    pub fn dns_label(&self) -> String {
        self.symbols[..CANONICAL_CHARS.min(self.symbols.len())].to_ascii_lowercase()
    }

    /// The HTTPS well-known name: the first 24 characters, upper case, dashes every 4
    /// (`/.well-known/mmm-udf/<this>`).
    pub fn well_known_name(&self) -> String {
        self.truncated(CANONICAL_CHARS * 5).to_string()
    }

    /// The form used inside addresses: lower case with dashes.
    pub fn to_label_form(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

impl fmt::Display for Udf {
    /// Upper case with a dash after every 4 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.symbols.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // The symbols are ASCII by construction.
            f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Udf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Udf({self})")
    }
}

fn symbol_value(c: char) -> Option<u8> {
    let up = c.to_ascii_uppercase() as u8;
    if !c.is_ascii() {
        return None;
    }
    ALPHABET.iter().position(|&a| a == up).map(|p| p as u8)
}

/// RFC 4648 Base32 without padding.
fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from mesh-formats.md §1 (verified there against the drafts).
    #[test]
    fn content_digest_vectors() {
        let data = b"UDF Data Value";
        assert_eq!(
            Udf::content_digest(data, "text/plain", 140).to_string(),
            "MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF"
        );
        assert_eq!(
            Udf::content_digest(data, "text/plain", 100).to_string(),
            "MDDK-7N6A-727A-JZNO-STRX"
        );
        assert_eq!(
            Udf::content_digest(data, "text/plain", 200).to_string(),
            "MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF-XI6O-ZSLU-2VOA"
        );
        assert_eq!(
            Udf::content_digest_typed(b"UDF Compressed Document 4187123", "text/plain", 140, 97)
                .to_string(),
            "MGHB-JWIZ-J3LA-EEWD-GCT3-WX6H-C5W2"
        );
    }

    #[test]
    fn ed25519_key_fingerprint_is_pinned() {
        // meshmail's own vector: the RFC 8032 test 1 public key.
        let pk: [u8; 32] = data_encoding::HEXLOWER
            .decode(b"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap()
            .try_into()
            .unwrap();
        let udf = Udf::of_ed25519_key(&pk, 140);
        assert_eq!(udf.bits(), 140);
        assert_eq!(udf.type_byte(), TYPE_SHA512);
        assert_eq!(udf.to_string(), PINNED_ED25519_UDF);
        // Same digest computed by hand over the SPKI DER.
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&pk);
        assert_eq!(udf, Udf::content_digest(&spki, KEY_CONTENT_TYPE, 140));
    }

    // Recomputed with Python's hashlib/base64 over the SPKI DER of the RFC 8032 test-1 key.
    const PINNED_ED25519_UDF: &str = "MCF2-2NZ4-KL4B-2AND-AJRD-4ACA-KSKZ";

    #[test]
    fn parse_accepts_case_and_dashes_and_compares_by_prefix() {
        let full = Udf::parse("MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF").unwrap();
        let lower = Udf::parse("mddk-7n6a-727a-jzno-strx-xks7-djaf").unwrap();
        let dashless = Udf::parse("MDDK7N6A727AJZNOSTRXXKS7DJAF").unwrap();
        assert_eq!(full, lower);
        assert_eq!(full, dashless);
        let short = Udf::parse("MDDK-7N6A-727A-JZNO-STRX-XKS7").unwrap();
        assert!(short.matches(&full) && full.matches(&short));
        let other = Udf::parse("MDDK-7N6A-727A-JZNO-STRX-XKS8").unwrap_err();
        assert_eq!(other, UdfError::BadCharacter('8'));
        let differs = Udf::parse("MDDK-7N6A-727A-JZNO-STRX-XKSA").unwrap();
        assert!(!differs.matches(&full));
        assert_eq!(full.dns_label(), "mddk7n6a727ajznostrxxks7");
        assert_eq!(full.well_known_name(), "MDDK-7N6A-727A-JZNO-STRX-XKS7");
    }

    #[test]
    fn parse_refusals() {
        assert_eq!(Udf::parse(""), Err(UdfError::Empty));
        assert_eq!(
            Udf::parse("MDDK-7N6A-727A-JZNO-STRX"),
            Err(UdfError::TooShort(100))
        );
        assert_eq!(
            Udf::parse("MDD-K7N6A-727A-JZNO-STRX-XKS7"),
            Err(UdfError::BadGrouping)
        );
        assert_eq!(
            Udf::parse("MDDK--7N6A-727A-JZNO-STRX-XKS7"),
            Err(UdfError::BadGrouping)
        );
        assert_eq!(
            Udf::parse("MDDK-7N6A-727A-JZNO-STRX-XKS7-"),
            Err(UdfError::BadGrouping)
        );
        assert_eq!(
            Udf::parse("AAAA-7N6A-727A-JZNO-STRX-XKS7"),
            Err(UdfError::UnknownType(0))
        );
        assert!(matches!(
            Udf::parse(&"M".repeat(105)),
            Err(UdfError::TooLong(105))
        ));
        assert_eq!(
            Udf::parse("MDDK-7N6A-727A-JZNO-STRX-XKé7"),
            Err(UdfError::BadCharacter('é'))
        );
    }
}
