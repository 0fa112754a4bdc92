//! Replays the kept fuzz corpus (`receiver/fuzz/corpus/<target>/`) through the properties the
//! fuzz targets check, so `make test` guards every input the fuzzer found interesting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use hookwarden_receiver::fuzzing;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} failed on {}", path.display());
        count += 1;
    }
    // A corpus that went missing would make this test pass vacuously.
    assert!(
        count >= 20,
        "{target}: only {count} corpus inputs in {}",
        dir.display()
    );
}

#[test]
fn signature_corpus() {
    replay("signature", fuzzing::signature);
}

#[test]
fn payload_corpus() {
    replay("payload", fuzzing::payload);
}

#[test]
fn node_json_corpus() {
    replay("node_json", fuzzing::node_json);
}

#[test]
fn config_corpus() {
    replay("config", fuzzing::config);
}
