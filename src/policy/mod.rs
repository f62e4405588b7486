//! Signed policies: the document ([`document`]), its JWS form ([`jws`]), verification
//! ([`verify`], the only maker of [`Verified`]), discovery through the local store, DNS and
//! HTTPS ([`resolve`]), the outcome cache ([`cache`]), and the account's own policy
//! ([`issue`], [`publish`]).

pub mod cache;
pub mod dns;
pub mod document;
pub mod https;
pub mod issue;
pub mod jws;
pub mod publish;
pub mod resolve;
pub mod store;
mod strict_json;
pub mod verify;

pub use document::{Format, PolicyDocument};
pub use resolve::{PolicyResolver, ResolveFailure, ResolverSettings};
pub use verify::{PolicyRefusal, Source, Verified};
