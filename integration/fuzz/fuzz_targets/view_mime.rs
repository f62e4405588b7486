//! Arbitrary bytes as a message: the view's MIME parser, structure, sections and search text,
//! and the FETCH response scanner.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshmail::imap::fuzz::view(data);
});
