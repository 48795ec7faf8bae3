//! One BootstrapFewShot pass as MIPROv2 uses it for a demo set.
//!
//! DSPy's algorithm: a teacher (the initial state carrying `max_labeled_demos` random labeled
//! demos) runs the training examples in order, each without itself among the teacher's demos,
//! until `max_bootstrapped` of them succeed; a success's trace gives every predictor one demo
//! (its inputs and parsed outputs, the last step when a predictor ran several times). Each
//! predictor's set is then topped up to `max_labeled_demos` with shuffled training examples that
//! were not bootstrapped.

use std::collections::BTreeMap;

use promptopt_core::{Example, ProgramState};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::demos::{labeled, DemoSettings, PredictorDemos};
use crate::{OptimizeContext, OptimizeError};

/// Bootstraps up to `max_bootstrapped` demos per predictor over `trainset` in order and tops
/// them up with labeled examples. Returns the demos and the program runs spent.
pub(crate) async fn bootstrap(
    ctx: &OptimizeContext,
    trainset: &[Example],
    initial: &ProgramState,
    max_bootstrapped: usize,
    settings: &DemoSettings,
    rng: &mut ChaCha8Rng,
) -> Result<(PredictorDemos, usize), OptimizeError> {
    let names: Vec<String> = ctx.predictors().into_iter().map(|p| p.name).collect();
    let mut teacher = initial.clone();
    if settings.max_labeled_demos > 0 {
        for (name, (demos, _)) in labeled(&names, trainset, settings.max_labeled_demos, rng) {
            if let Some(p) = teacher.predictor_mut(&name) {
                p.demos = demos;
            }
        }
    }
    let info = ctx.metric().info();
    let success = |value: f64| match settings.metric_threshold {
        Some(threshold) => value >= threshold,
        None => value > info.min,
    };

    let mut traces: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    let mut used = vec![false; trainset.len()];
    let mut bootstrapped = 0usize;
    let mut runs = 0usize;
    let mut errors = 0usize;
    for (index, example) in trainset.iter().enumerate() {
        if bootstrapped >= max_bootstrapped {
            break;
        }
        let mut without_self = teacher.clone();
        for p in without_self.predictors.values_mut() {
            p.demos.retain(|d| d != example);
        }
        for _round in 0..settings.max_rounds.max(1) {
            runs += 1;
            let (prediction, trace) = match ctx.run(&without_self, example).await {
                Ok(ran) => ran,
                Err(OptimizeError::Stopped(reason)) => return Err(OptimizeError::Stopped(reason)),
                Err(error) => {
                    errors += 1;
                    if errors >= 10 {
                        return Err(error);
                    }
                    continue;
                }
            };
            if trace.has_parse_failure() {
                continue;
            }
            let score = ctx.score(example, &prediction, &trace);
            if !success(score.value) {
                continue;
            }
            let mut per_predictor: BTreeMap<String, Example> = BTreeMap::new();
            for step in &trace.steps {
                let Some(outputs) = &step.outputs else {
                    continue;
                };
                let mut demo = step.inputs.clone();
                demo.merge(outputs);
                per_predictor.insert(step.predictor.clone(), demo);
            }
            for (name, demo) in per_predictor {
                traces.entry(name).or_default().push(demo);
            }
            used[index] = true;
            bootstrapped += 1;
            break;
        }
    }

    let mut rest: Vec<&Example> = trainset
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(e, _)| e)
        .collect();
    rest.shuffle(rng);
    let mut out = PredictorDemos::new();
    for name in names {
        let mut demos: Vec<Example> = traces
            .remove(&name)
            .unwrap_or_default()
            .into_iter()
            .take(max_bootstrapped)
            .collect();
        let n_boot = demos.len();
        let fill = settings
            .max_labeled_demos
            .saturating_sub(n_boot)
            .min(rest.len());
        demos.extend(rest.choose_multiple(rng, fill).map(|e| (*e).clone()));
        out.insert(name, (demos, n_boot));
    }
    Ok((out, runs))
}
