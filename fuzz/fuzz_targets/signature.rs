//! Signatures written as text (`"question, n: int -> answer"`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptopt_core::program::parse_signature;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(signature) = parse_signature(&text, &[]) {
        // What parses has an output, and no field is both read and written.
        let inputs = signature.input_names();
        let outputs = signature.output_names();
        assert!(!outputs.is_empty());
        assert!(outputs.iter().all(|o| !inputs.contains(o)));
    }
});
