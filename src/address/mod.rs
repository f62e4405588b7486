//! Addresses: UDF fingerprints ([`udf`]) and strong (fingerprint) addresses ([`strong`]).
//!
//! `alice@example.com.xx--mddk-…` means "deliver to `alice@example.com`, but only as the policy
//! signed under that fingerprint demands". This module only parses and formats; what a
//! fingerprint obliges the sender to do is the `policy` module's business.

pub mod strong;
pub mod udf;

pub use strong::{AddressError, Fingerprint, Form, Label, MailAddress, StrongAddress};
pub use udf::{Udf, UdfError};
