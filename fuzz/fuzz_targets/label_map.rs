//! The label-map parser (`folder<TAB>label` lines); every rule it accepts must resolve.
#![no_main]

use artemis_data::labels::{LabelMap, Resolved};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = LabelMap::parse(text) {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(folder) = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .find(|p| !p.is_empty())
            {
                assert_ne!(map.resolve(folder), Resolved::Unknown, "{folder}");
            }
        }
    }
});
