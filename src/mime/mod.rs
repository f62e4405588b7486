//! MIME structure for outgoing copies: header fields as they were written, header protection
//! (RFC 9788 with Thunderbird's legacy `protected-headers="v1"`), and the PGP/MIME (RFC 3156) and
//! S/MIME (RFC 8551) envelopes. Pure formatting: no cryptography and no I/O here.
//!
//! Bytes outside the encrypted layer are never re-encoded: the original body, signed parts
//! included, goes into the encrypted part byte for byte.

pub mod at_rest;
pub mod encrypted;
pub mod headers;
pub mod protect;

pub use headers::{HeaderField, MimeError, ParsedMessage};
pub use protect::{pgp_mime, smime_mime, Protected};
