//! Arbitrary bytes as Postfix's LMTP client would send them to the filter.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshmail::filter::fuzz::lmtp(data);
});
