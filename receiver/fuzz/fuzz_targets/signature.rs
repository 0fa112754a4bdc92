//! See `hookwarden_receiver::fuzzing::signature` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookwarden_receiver::fuzzing::signature(data));
