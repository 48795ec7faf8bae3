//! Optimization requests as YAML and as JSON: any text is a request or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptopt_optimize::OptimizationRequest;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = OptimizationRequest::from_yaml_str(&text);
    let _ = OptimizationRequest::from_json_str(&text);
});
