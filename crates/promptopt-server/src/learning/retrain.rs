//! A retraining: its data and request, the comparison of the new version with the current one
//! on the held-out slice, and deployment.

use promptopt_core::{value_to_text, Example};
use promptopt_experiments::{ExperimentSpec, Outcome};
use promptopt_jobs::JobSpec;
use promptopt_learning::config::{DeployPolicy, LearningConfig};
use promptopt_learning::dataset::{self, Labelled, RetrainData};
use promptopt_optimize::{DataSource, OptimizationRequest};
use promptopt_registry::{ModelArtifact, ModelRef, Version};
use serde_json::{Map, Value};

use crate::AppState;

/// The outputs an outcome says the prediction should have had: `expected_output` when the
/// caller gave it, else the served outputs when the outcome is a full success; `None` when the
/// outcome does not say (a partial score, a failure without the right answer).
pub(crate) fn label_of(outcome: &Outcome, output_keys: &[String]) -> Option<Map<String, Value>> {
    match outcome.detail.get("expected_output") {
        Some(Value::Object(map)) => Some(map.clone()),
        Some(Value::Null) | None => {
            if outcome.score >= 1.0 {
                outcome.outputs.as_object().cloned()
            } else {
                None
            }
        }
        Some(other) => {
            let key = output_keys.first()?;
            let mut map = Map::new();
            map.insert(key.clone(), other.clone());
            Some(map)
        }
    }
}

/// A labelled example from an outcome: the logged inputs (all the program's input fields must
/// be there: a field dropped by redaction makes the prediction unusable) and its label.
pub(crate) fn labelled(
    outcome: &Outcome,
    input_keys: &[String],
    output_keys: &[String],
) -> Option<Labelled> {
    let inputs = outcome.inputs.as_object()?;
    if input_keys.iter().any(|k| !inputs.contains_key(k)) {
        return None;
    }
    let label = label_of(outcome, output_keys)?;
    let mut fields = Map::new();
    for key in input_keys {
        fields.insert(key.clone(), inputs.get(key)?.clone());
    }
    for key in output_keys {
        fields.insert(key.clone(), label.get(key)?.clone());
    }
    Some(Labelled {
        example: Example::from_map(fields),
        at: outcome.updated_at,
    })
}

/// The request a version was made by.
pub(crate) fn request_of(artifact: &ModelArtifact) -> Result<OptimizationRequest, String> {
    let value = artifact.provenance.request.clone().ok_or_else(|| {
        format!(
            "`{}` has no stored request (it was not made by an optimization), so it cannot be retrained",
            artifact.id()
        )
    })?;
    serde_json::from_value(value).map_err(|e| {
        format!(
            "the stored request of `{}` does not parse: {e}",
            artifact.id()
        )
    })
}

/// The retraining request and its data: the current version's request (same algorithm,
/// configuration and seed) on its training and validation data plus the recent labelled
/// predictions (see [`dataset::assemble`]).
pub(crate) fn build_request(
    artifact: &ModelArtifact,
    recent: &[Labelled],
    config: &LearningConfig,
    home: &std::path::Path,
    round: u64,
) -> Result<(OptimizationRequest, RetrainData), String> {
    let mut request = request_of(artifact)?;
    let base = request
        .base_dir
        .clone()
        .unwrap_or_else(|| home.to_path_buf());
    let mut original = request
        .training_examples
        .load(&base)
        .map_err(|e| format!("the original training data of `{}`: {e}", artifact.id()))?;
    // The original validation examples join the pool: their labels may be as stale as the
    // training ones, and the same replacement rule applies. The optimizer splits its own
    // validation set from the combined data.
    if let Some(validation) = &request.validation_examples {
        original.extend(
            validation
                .load(&base)
                .map_err(|e| format!("the original validation data of `{}`: {e}", artifact.id()))?,
        );
    }
    let input_keys = artifact.program.input_keys();
    let data = dataset::assemble(
        &original,
        recent,
        input_keys,
        &config.data,
        request.seed.wrapping_add(round),
    );
    if data.holdout.len() < config.data.min_holdout {
        return Err(format!(
            "only {} recent labelled examples to hold out; `data.min_holdout` is {}",
            data.holdout.len(),
            config.data.min_holdout
        ));
    }
    request.training_examples = DataSource::Inline(data.train.clone());
    request.validation_examples = None;
    request.test_examples = None;
    request.name = Some(artifact.name.clone());
    request.base_dir = None;
    Ok((request, data))
}

/// Queues the retraining job.
pub(crate) async fn submit(
    state: &AppState,
    request: OptimizationRequest,
    config: &LearningConfig,
) -> Result<String, String> {
    let timeout = config.timeout.as_ref().map(|t| t.0.clone());
    let spec = JobSpec::for_request(request, &config.priority, timeout.as_deref(), 2)
        .map_err(|e| e.to_string())?;
    let record = state.queue.submit(&spec).await.map_err(|e| e.to_string())?;
    Ok(record.job_id)
}

/// Scores a version on the held-out examples with its own metric.
pub(crate) async fn score(
    state: &AppState,
    name: &str,
    version: Version,
    holdout: &[Example],
) -> Result<f64, String> {
    let loaded = state
        .models
        .get(name, version)
        .await
        .map_err(|e| e.message)?;
    let (_, report) = loaded
        .pipeline
        .evaluate_model(&format!("{name}@{version}"), holdout, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(report.score)
}

/// Points `production` at `version`.
pub(crate) async fn set_production(
    state: &AppState,
    name: &str,
    version: Version,
) -> Result<(), String> {
    let registry = state.registry.clone();
    let model = name.to_string();
    tokio::task::spawn_blocking(move || registry.set_alias(&model, "production", version))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    state.models.invalidate(name, None);
    Ok(())
}

/// The production version: the `production` alias, else the latest version.
pub(crate) async fn production(state: &AppState, name: &str) -> Option<Version> {
    match state.models.resolve(name, "production").await {
        Ok(v) => Some(v),
        Err(_) => state.models.resolve(name, "latest").await.ok(),
    }
}

/// Starts an A/B experiment of `candidate` against `current`; returns its name.
pub(crate) async fn start_experiment(
    state: &AppState,
    name: &str,
    current: Version,
    candidate: Version,
    config: &LearningConfig,
    metric: &str,
) -> Result<String, String> {
    let spec: ExperimentSpec = serde_json::from_value(serde_json::json!({
        "name": format!("learn-{name}-{candidate}"),
        "variants": {
            "control": format!("{name}@{current}"),
            "candidate": format!("{name}@{candidate}"),
        },
        "traffic_split": {
            "control": 1.0 - config.deploy.traffic,
            "candidate": config.deploy.traffic,
        },
        "success_metric": metric,
        "auto_promote": true,
        "control": "control",
        "description": format!("Continuous learning: `{name}@{candidate}` against production `{name}@{current}`"),
    }))
    .map_err(|e| e.to_string())?;
    let experiment = crate::experiments::insert_experiment(state, spec, true)
        .await
        .map_err(|e| e.message)?;
    Ok(experiment.spec.name)
}

/// How a validated candidate is deployed, in words.
pub(crate) fn policy_name(policy: DeployPolicy) -> &'static str {
    match policy {
        DeployPolicy::Promote => "promote",
        DeployPolicy::Experiment => "experiment",
    }
}

/// The exact version of `model_id` (`name@1.2.0`).
pub(crate) fn version_of(model_id: &str) -> Option<Version> {
    let reference: ModelRef = model_id.parse().ok()?;
    match reference.selector {
        promptopt_registry::Selector::Version(v) => Some(v),
        _ => None,
    }
}

/// The text of an example's first output field (the label of a classifier).
pub(crate) fn first_output(outputs: &Value, key: Option<&String>) -> Option<String> {
    let map = outputs.as_object()?;
    let value = match key {
        Some(k) => map.get(k)?,
        None => map.values().next()?,
    };
    Some(value_to_text(value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn outcome(detail: Value, score: f64) -> Outcome {
        Outcome {
            prediction_id: "pred-1".into(),
            model_id: "t@1.0.0".into(),
            inputs: json!({"text": "refund please"}),
            outputs: json!({"label": "billing"}),
            score,
            detail,
            updated_at: 5.0,
        }
    }

    #[test]
    fn labels_come_from_the_expected_output_or_a_full_success() {
        let keys = (vec!["text".to_string()], vec!["label".to_string()]);
        let corrected = outcome(json!({"expected_output": "payments"}), 0.0);
        let l = labelled(&corrected, &keys.0, &keys.1).unwrap();
        assert_eq!(l.example.text("label").unwrap(), "payments");
        assert_eq!(l.example.text("text").unwrap(), "refund please");
        let object = outcome(json!({"expected_output": {"label": "x"}}), 0.0);
        assert_eq!(
            labelled(&object, &keys.0, &keys.1)
                .unwrap()
                .example
                .text("label")
                .unwrap(),
            "x"
        );
        let success = outcome(json!({"success": true}), 1.0);
        assert_eq!(
            labelled(&success, &keys.0, &keys.1)
                .unwrap()
                .example
                .text("label")
                .unwrap(),
            "billing"
        );
        assert!(labelled(&outcome(json!({"success": false}), 0.0), &keys.0, &keys.1).is_none());
        assert!(labelled(&outcome(json!({"score": 0.5}), 0.5), &keys.0, &keys.1).is_none());
        let dropped = Outcome {
            inputs: json!({}),
            ..outcome(json!({"success": true}), 1.0)
        };
        assert!(labelled(&dropped, &keys.0, &keys.1).is_none());
    }
}
