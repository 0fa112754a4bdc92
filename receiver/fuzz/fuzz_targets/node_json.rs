//! See `hookwarden_receiver::fuzzing::node_json` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookwarden_receiver::fuzzing::node_json(data));
