//! meshmail: a mail transport proxy that makes end-to-end encryption happen for unchanged mail
//! clients and servers, after the Mathematical Mesh (fingerprint addresses, signed policies,
//! recryption).
//!
//! # Layout
//!
//! Data flows one way: listener → session → pipeline → relay.
//!
//! - [`address`]: UDF fingerprints and strong (fingerprint) addresses: parse and format only.
//! - [`policy`]: signed policy documents, their verification (the only maker of
//!   [`policy::Verified`]), discovery (local store → DNS → HTTPS) and the outcome cache.
//! - [`keys`]: the account's key store: keys, certificates, sealed secrets, export, recovery
//!   shares, and the enrolment of a split account's devices (`keys::device`).
//! - [`crypto`]: OpenPGP and S/MIME certificates, message encryption and decryption, and
//!   recryption (the account's Cv25519 subkey split between the store and each device).
//! - [`mime`]: header protection and the PGP/MIME and S/MIME envelopes of outgoing copies.
//! - [`pipeline`]: what each recipient gets (classification, copies, sealing), and delivery
//!   reports; a [`struct@pipeline::Copy`] is the only thing the relay sends.
//! - [`smtp`]: the submission proxy (a sans-I/O session core and its driver, DATA, the upstream
//!   relay in typed states, the report spool).
//! - [`upstream`]: what the SMTP and IMAP upstreams share: target, TLS handshake, pinning.
//! - [`listen`]: the accept loop both listeners share, and draining on shutdown.
//! - [`filter`]: the MTA sidecar: an LMTP content filter behind Postfix (outbound policy
//!   enforcement, inbound encryption at rest, reinjection) and Postfix's policy service.
//! - [`imap`]: the IMAP proxy: framing (imap-codec for commands, `frame` for responses),
//!   capabilities, the decrypted view (its structure as Dovecot computes it),
//!   FETCH/SEARCH/APPEND of mapped sessions, the index and the background indexer that fills
//!   it as mail arrives.
//! - [`pop3`]: the POP3 proxy: its codec, a sans-I/O session core (RETR/TOP from the IMAP
//!   proxy's view, LIST/STAT sizes as RETR serves them) and the sealed size book.
//! - [`sasl`]: which login a SASL exchange names (IMAP AUTHENTICATE and POP3 AUTH).
//! - [`store`]: the store role (recryption in front of the mail store): share records, the
//!   private FETCH item, device binding and the per-device audit log.
//! - [`mailbox`]: stored mail re-encrypted in place (`meshmail mailbox encrypt`).
//! - [`tls`]: rustls configurations; certificates are always verified.
//! - [`config`]: the TOML configuration.
//! - [`codes`]: the one table of outcomes → exit codes / SMTP / IMAP replies.
//! - [`secret`]: secrets as a type (redacted `Debug`, zeroized on drop).
//!
//! - [`pop3`]: the POP3 proxy (so far its codec: commands, replies, dot-stuffing).

pub mod address;
pub mod codes;
pub mod config;
pub mod crypto;
pub mod filter;
pub mod imap;
pub mod keys;
pub mod listen;
pub mod mailbox;
pub mod mime;
pub mod pipeline;
pub mod policy;
pub mod pop3;
pub mod sasl;
pub mod secret;
pub mod serve;
pub mod smtp;
pub mod store;
pub mod thunderbird;
pub mod tls;
pub mod upstream;
