//! MLflow search filters and orderings as `promptopt runs` reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptopt_tracking::{Filter, OrderBy};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Filter::parse(&text);
    let items: Vec<String> = text.split(',').map(str::to_string).collect();
    let _ = OrderBy::parse(&items);
});
