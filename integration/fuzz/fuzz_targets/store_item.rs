//! Arbitrary bytes through the store's private FETCH item and partial computation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshmail::store::fuzz::item(data);
});
