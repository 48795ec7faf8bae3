//! Reply lines of a custom metric command: a finite score or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptopt_core::metrics::parse_metric_reply;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Ok(score) = parse_metric_reply(&line) {
        assert!(score.value.is_finite());
    }
});
