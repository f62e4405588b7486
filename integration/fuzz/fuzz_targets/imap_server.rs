//! The IMAP session core fed arbitrary server bytes while a mapped session's view FETCH runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshmail::imap::fuzz::server_bytes(data);
});
