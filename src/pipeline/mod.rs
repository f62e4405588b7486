//! The outbound pipeline, shared by the device and sidecar roles: classify each recipient at
//! RCPT time ([`classify`]), then at the end of DATA group recipients into copies and seal
//! each copy that needs encryption ([`plan`]). The SMTP session hands messages here and relays
//! what comes back; it never calls crypto itself.

pub mod classify;
pub mod plan;

pub use classify::{Classified, Refusal, Treatment};
pub use plan::{plan_copies, Copy, CopyBody, SenderKeys};
