//! Arbitrary bytes as the texts of enrolment and revocation (device request, admin reply,
//! share record, signed revocation) and as a store's FETCH response a device reads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshmail::store::fuzz::enrolment(data);
});
