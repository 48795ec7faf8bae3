//! Model replies read by every adapter, for a signature with a label, a number and free text,
//! with and without chain of thought.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptopt_core::adapter::{Adapter, ChatAdapter, CompletionAdapter, JsonAdapter, TurnsAdapter};
use promptopt_core::{Field, FieldType, Signature, Strategy};

fuzz_target!(|data: &[u8]| {
    let reply = String::from_utf8_lossy(data);
    let signature = Signature::new(
        vec![Field::text("text")],
        vec![
            Field::label("label", vec!["positive".into(), "negative".into()]),
            Field::new("count", FieldType::Integer),
            Field::new("score", FieldType::Number),
            Field::new("ok", FieldType::Bool),
            Field::text("answer"),
        ],
    );
    let single = Signature::new(vec![Field::text("text")], vec![Field::text("answer")]);
    let adapters: [&dyn Adapter; 5] = [
        &ChatAdapter,
        &TurnsAdapter,
        &JsonAdapter::new(false),
        &JsonAdapter::new(true),
        &CompletionAdapter,
    ];
    for adapter in adapters {
        for strategy in [Strategy::Predict, Strategy::ChainOfThought, Strategy::React] {
            let _ = adapter.parse(&signature, strategy, &reply);
            let _ = adapter.parse(&single, strategy, &reply);
        }
    }
});
