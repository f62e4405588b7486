//! Arbitrary bytes as a submitted message: the DATA receiver, the strict check of a
//! client-encrypted message, and the copies for a strong recipient (never plaintext).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshmail::pipeline::fuzz::submission(data);
});
