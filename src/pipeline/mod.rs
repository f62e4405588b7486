//! The outbound pipeline, shared by the device and sidecar roles: classify each recipient at
//! RCPT time ([`classify`]), then at the end of DATA group recipients into copies and seal
//! each copy that needs encryption ([`plan`]); reports to the sender about recipients that
//! failed after the client heard `250` ([`report`]). The SMTP session hands messages here and relays
//! what comes back; it never calls crypto itself.

pub mod classify;
pub mod copy;
#[doc(hidden)]
pub mod fuzz;
pub mod plan;
pub mod report;

pub use classify::{Classified, Refusal, Treatment};
pub use copy::{Copy, Payload};
pub use plan::{plan_copies, Plan, SenderKeys};
pub use report::{Failed, Report};

#[cfg(test)]
mod tests;
