//! The `X-Moov-Version` check.
//!
//! Properties: no panic; whatever is accepted is `latest` or exactly `vYYYY.MM.BB` with a month
//! from 01 to 12 (it prints back the same from its numbers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::fuzzing::valid_moov_version;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if !valid_moov_version(s) || s == "latest" {
        return;
    }
    let nums: Vec<u32> = s[1..].split('.').map(|p| p.parse().unwrap()).collect();
    let [y, m, b] = nums[..] else {
        panic!("{s:?} accepted without three parts");
    };
    assert!((1..=12).contains(&m), "{s:?}");
    assert_eq!(format!("v{y:04}.{m:02}.{b:02}"), s);
});
