//! The POP3 session core fed arbitrary client bytes (the first half of the input's bytes
//! decide) or server bytes while a mapped session's RETR is in flight.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&which, rest)) if which % 2 == 0 => meshmail::pop3::fuzz::client_bytes(rest),
        Some((_, rest)) => meshmail::pop3::fuzz::server_bytes(rest),
        None => {}
    }
});
