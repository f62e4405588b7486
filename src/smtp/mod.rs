//! SMTP: the submission listener (`server`), one session per client (`session`), the DATA
//! receiver (`data`), replies (`reply`), and the upstream connection (`upstream`).
//!
//! A session reads commands with smtp-proto's parser, hands recipients and messages to the
//! `pipeline`, and relays what the pipeline returns over its own upstream connection,
//! authenticated with the client's credentials. Data flows one way: listener → session →
//! pipeline → upstream.

pub mod data;
pub mod reply;
pub mod server;
pub mod session;
pub mod spool;
pub mod upstream;

pub use server::{run_listener, SmtpContext};
