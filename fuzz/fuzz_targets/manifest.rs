//! The split-manifest parser. A manifest that parses must survive a round trip unchanged.
#![no_main]

use artemis_data::manifest::Manifest;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.tsv");
    if let Ok(m) = Manifest::parse(text, path) {
        let again = Manifest::parse(&m.to_tsv(), path).expect("a written manifest parses");
        assert_eq!(m, again);
    }
});
