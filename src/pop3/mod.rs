//! The POP3 proxy (issue 14), in the device role: so far its codec, kept apart from the session
//! core that will use it: client commands ([`command`]) and the server's replies, single and
//! multi-line, with dot-stuffing ([`reply`]).

pub mod command;
pub mod reply;
