//! Step 1 of MIPROv2: candidate demo sets per predictor, built as DSPy builds them.
//!
//! For `n` candidates: set 0 is empty (zero-shot); set 1 holds `max_labeled_demos` labeled
//! training examples drawn at random (when `max_labeled_demos > 0`, otherwise this slot is one
//! more shuffled bootstrap); set 2 bootstraps up to `max_bootstrapped_demos` demos over the
//! training set in order; every further set shuffles the training set and bootstraps a random
//! number of demos between 1 and `max_bootstrapped_demos`. Bootstrapped sets are topped up with
//! labeled examples up to `max_labeled_demos`, as BootstrapFewShot does (the crate's
//! [`BootstrapFewShot`] and [`LabeledFewShot`] build them). Every program run and random choice
//! goes through the run's context and generator.

use std::collections::BTreeMap;

use promptopt_core::{Example, ProgramState};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{BootstrapFewShot, LabeledFewShot, OptimizeContext, OptimizeError};

/// How a demo set was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DemoSetKind {
    /// No demos.
    ZeroShot,
    /// Labeled training examples only.
    Labeled,
    /// Bootstrapped over the training set in order.
    Bootstrapped,
    /// Bootstrapped over a shuffled training set, asking for `size` demos.
    Shuffled {
        /// The number of bootstrapped demos asked for.
        size: usize,
    },
}

/// One candidate demo set of one predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoSet {
    /// How it was made.
    pub kind: DemoSetKind,
    /// The demos; the bootstrapped ones come first.
    pub demos: Vec<Example>,
    /// How many of `demos` were bootstrapped (the rest are labeled examples).
    pub n_bootstrapped: usize,
}

impl DemoSet {
    /// The bootstrapped demos.
    pub fn bootstrapped(&self) -> &[Example] {
        &self.demos[..self.n_bootstrapped.min(self.demos.len())]
    }

    /// A few words about the set, e.g. `shuffled bootstrap (2 asked): 2 bootstrapped + 4 labeled`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            DemoSetKind::ZeroShot => "zero-shot".to_string(),
            DemoSetKind::Labeled => "labeled".to_string(),
            DemoSetKind::Bootstrapped => "bootstrap".to_string(),
            DemoSetKind::Shuffled { size } => format!("shuffled bootstrap ({size} asked)"),
        };
        format!(
            "{kind}: {} bootstrapped + {} labeled",
            self.n_bootstrapped,
            self.demos.len() - self.n_bootstrapped.min(self.demos.len())
        )
    }
}

/// What the demo sets are built with.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSettings {
    /// Number of sets per predictor (at least 1).
    pub num_sets: usize,
    /// Most bootstrapped demos per set.
    pub max_bootstrapped_demos: usize,
    /// Most labeled demos per set.
    pub max_labeled_demos: usize,
    /// Bootstrapping rounds per training example.
    pub max_rounds: usize,
    /// Score a bootstrapped trace must reach to count as a success.
    pub metric_threshold: Option<f64>,
}

/// The demo sets of every predictor (`[predictor][set]`, predictors in program order), and the
/// training examples bootstrapping tried.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoCandidates {
    /// Per predictor, its sets.
    pub sets: Vec<Vec<DemoSet>>,
    /// Training examples tried while bootstrapping (one program run each per round).
    pub bootstrap_runs: usize,
}

/// Per predictor: demos (bootstrapped first) and how many were bootstrapped.
type PredictorDemos = BTreeMap<String, (Vec<Example>, usize)>;

/// The demos of every predictor of `state`, each with its bootstrapped count.
fn demos_of(state: &ProgramState, bootstrapped: usize) -> PredictorDemos {
    state
        .predictors
        .iter()
        .map(|(name, p)| {
            let n = bootstrapped.min(p.demos.len());
            (name.clone(), (p.demos.clone(), n))
        })
        .collect()
}

/// Builds the demo sets. `initial` is the state whose instructions the bootstrapping teacher
/// runs with. A stop while bootstrapping ends the step with `Stopped`.
pub async fn build_demo_sets(
    ctx: &OptimizeContext,
    trainset: &[Example],
    initial: &ProgramState,
    settings: &DemoSettings,
    rng: &mut ChaCha8Rng,
) -> Result<DemoCandidates, OptimizeError> {
    let predictors = ctx.predictors();
    let mut sets: Vec<Vec<DemoSet>> = vec![Vec::new(); predictors.len()];
    let mut bootstrap_runs = 0usize;
    let push = |sets: &mut Vec<Vec<DemoSet>>, kind: DemoSetKind, demos: &PredictorDemos| {
        for (i, info) in predictors.iter().enumerate() {
            let (list, n_boot) = demos.get(&info.name).cloned().unwrap_or_default();
            sets[i].push(DemoSet {
                kind,
                demos: list,
                n_bootstrapped: n_boot,
            });
        }
    };
    let mut empty = initial.clone();
    for p in empty.predictors.values_mut() {
        p.demos.clear();
    }
    for slot in 0..settings.num_sets.max(1) {
        let (kind, order, size) = match slot {
            0 => {
                push(&mut sets, DemoSetKind::ZeroShot, &demos_of(&empty, 0));
                continue;
            }
            1 if settings.max_labeled_demos > 0 => {
                let state = LabeledFewShot {
                    k: settings.max_labeled_demos,
                    sample: true,
                }
                .apply(&predictors, trainset, &empty, rng);
                push(&mut sets, DemoSetKind::Labeled, &demos_of(&state, 0));
                continue;
            }
            2 => (
                DemoSetKind::Bootstrapped,
                trainset.to_vec(),
                settings.max_bootstrapped_demos,
            ),
            _ => {
                let mut shuffled = trainset.to_vec();
                shuffled.shuffle(rng);
                let size = rng.gen_range(1..=settings.max_bootstrapped_demos.max(1));
                (DemoSetKind::Shuffled { size }, shuffled, size)
            }
        };
        let bootstrap = BootstrapFewShot {
            max_bootstrapped_demos: size,
            max_labeled_demos: settings.max_labeled_demos,
            max_rounds: settings.max_rounds.max(1),
            metric_threshold: settings.metric_threshold,
            ..BootstrapFewShot::default()
        };
        let run = bootstrap.bootstrap(ctx, &order, &empty, rng).await?;
        if let Some(reason) = run.stop_reason {
            return Err(OptimizeError::Stopped(reason));
        }
        bootstrap_runs += run.tried;
        push(&mut sets, kind, &demos_of(&run.state, run.bootstrapped));
    }
    Ok(DemoCandidates {
        sets,
        bootstrap_runs,
    })
}
