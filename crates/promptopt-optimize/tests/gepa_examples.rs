//! The example GEPA requests configure what their comments say.
#![allow(clippy::unwrap_used)]

use promptopt_optimize::gepa::{AutoBudget, GepaConfig};
use promptopt_optimize::AlgorithmConfig;

fn load(name: &str) -> (serde_json::Value, GepaConfig) {
    let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let request: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let settings = AlgorithmConfig::from_json(request["algorithm_config"].clone()).unwrap();
    (request.clone(), GepaConfig::from_config(&settings).unwrap())
}

#[test]
fn example_requests_use_the_light_preset() {
    for name in [
        "sst2-gepa.yaml",
        "trec-gepa.yaml",
        "results/sst2-gepa-demos.yaml",
        "results/trec-gepa-demos.yaml",
        "results/agnews-gepa-demos.yaml",
    ] {
        let (request, config) = load(name);
        assert_eq!(request["algorithm"], "gepa");
        assert_eq!(config.auto, Some(AutoBudget::Light));
        // 100 development examples: (1 + 3) * 100 + 12 * 2 * 3 + 3 * 5.
        assert_eq!(config.metric_call_budget(100), Some(487), "{name}");
    }
}

#[test]
fn demo_requests_bootstrap_as_their_bootstrapfewshot_requests_do() {
    for task in ["sst2", "trec", "agnews"] {
        let (gepa, _) = load(&format!("results/{task}-gepa-demos.yaml"));
        let (boot, _) = load(&format!("results/{task}-bootstrap.yaml"));
        assert_eq!(
            gepa["targets"],
            serde_json::json!(["prompt_template", "few_shot_examples"])
        );
        for key in ["max_bootstrapped_demos", "max_labeled_demos"] {
            assert_eq!(
                gepa["algorithm_config"][key], boot["algorithm_config"][key],
                "{task} {key}"
            );
        }
        for key in [
            "training_examples",
            "validation_examples",
            "seed",
            "instructions",
        ] {
            assert_eq!(gepa[key], boot[key], "{task} {key}");
        }
    }
}
