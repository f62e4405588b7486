//! The IMAP session core fed arbitrary client bytes (a server that answers OK to everything).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshmail::imap::fuzz::client_bytes(data);
});
