//! Arbitrary bytes through every decryption entry point (OpenPGP, CMS, a whole stored message).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshmail::crypto::fuzz::decrypt(data);
});
