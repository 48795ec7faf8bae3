//! A GEPA run's state, saved to its run directory after every iteration so an interrupted run
//! can be resumed.
//!
//! The run directory holds `gepa_state.json` (everything below: candidates with their lineage
//! and per-example validation scores, the iteration log, the minibatch order, the merge ledger
//! and the metric calls used) and, to stop a run gracefully, a `gepa.stop` file anyone may
//! create. Randomness needs no saved generator: iteration `i` draws from the run seed's stream
//! `i`, so a resumed run makes the same draws as an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use promptopt_core::ProgramState;
use serde::{Deserialize, Serialize};

use super::budget::MetricBudget;
use super::config::GepaConfig;
use super::frontier::{average, Frontier};
use super::merge::MergeLedger;
use super::sampler::EpochSampler;
use crate::OptimizeError;

/// The state file's name inside the run directory.
pub const STATE_FILE: &str = "gepa_state.json";
/// The file whose presence stops a run at the next iteration.
pub const STOP_FILE: &str = "gepa.stop";
/// The state format's version.
pub const STATE_VERSION: u32 = 1;

/// How a candidate came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// The initial state.
    Seed,
    /// A reflective mutation of one parent.
    Reflection {
        /// The predictors whose instructions were rewritten.
        predictors: Vec<String>,
    },
    /// A merge of two parents over a common ancestor.
    Merge {
        /// The common ancestor.
        ancestor: usize,
    },
}

/// One candidate of the pool, with its lineage and validation scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateEntry {
    /// Its id (position in the pool, from 0 for the seed).
    pub id: usize,
    /// Its state.
    pub state: ProgramState,
    /// Its parents (none for the seed, one for a mutation, two for a merge).
    pub parents: Vec<usize>,
    /// How it was made.
    pub origin: Origin,
    /// Per validation example, its score.
    pub val_scores: Vec<f64>,
    /// The iteration that made it (0 for the seed, iterations from 1).
    pub iteration: u64,
    /// Metric calls used when it was added.
    pub discovered_at: u64,
    /// Whether it is still in the pool (the pool cap retires candidates).
    pub active: bool,
    /// Round robin: the index of the predictor its next mutation rewrites.
    pub next_predictor: usize,
}

impl CandidateEntry {
    /// Its average validation score.
    pub fn average(&self) -> f64 {
        average(&self.val_scores)
    }

    /// Its lineage in words (`seed`, `reflection on `p` of #1`, `merge of #2 and #3 over #0`).
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Seed => format!("#{} seed", self.id),
            Origin::Reflection { predictors } => format!(
                "#{} reflection on {} of #{}",
                self.id,
                predictors
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.parents.first().copied().unwrap_or_default()
            ),
            Origin::Merge { ancestor } => format!(
                "#{} merge of #{} and #{} over #{ancestor}",
                self.id,
                self.parents.first().copied().unwrap_or_default(),
                self.parents.get(1).copied().unwrap_or_default()
            ),
        }
    }
}

/// What one iteration did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    /// The iteration (from 1).
    pub iteration: u64,
    /// `reflection`, `merge` or `skip` (parent perfect on its minibatch, or no usable proposal).
    pub kind: String,
    /// The parent(s).
    pub parents: Vec<usize>,
    /// The predictors rewritten (reflection).
    pub predictors: Vec<String>,
    /// The training indices of the minibatch (reflection) or validation indices of the
    /// subsample (merge).
    pub examples: Vec<usize>,
    /// The parent's scores on them (for a merge: the sums of both parents).
    pub parent_scores: Vec<f64>,
    /// The proposal's scores on them.
    pub child_scores: Vec<f64>,
    /// Whether the proposal joined the pool.
    pub accepted: bool,
    /// Its id when it did.
    pub candidate: Option<usize>,
    /// Distinct candidates on the frontier after the iteration.
    pub frontier_size: usize,
    /// Metric calls used after the iteration.
    pub metric_calls: u64,
    /// Why it was skipped or rejected, in words.
    pub note: String,
}

/// Everything needed to continue a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Format version.
    pub version: u32,
    /// The run's seed.
    pub seed: u64,
    /// The settings the run started with.
    pub config: GepaConfig,
    /// Training examples.
    pub train_size: usize,
    /// Validation examples.
    pub val_size: usize,
    /// Every candidate ever added, by id.
    pub candidates: Vec<CandidateEntry>,
    /// Iterations completed.
    pub iteration: u64,
    /// The minibatch order.
    pub sampler: EpochSampler,
    /// Merges tried.
    pub ledger: MergeLedger,
    /// Merges scheduled by accepted mutations and not yet done.
    pub merges_due: u64,
    /// Merges accepted.
    pub merges_accepted: u64,
    /// Merge attempts evaluated.
    pub merges_tried: u64,
    /// Whether the last iteration added a mutated child (a merge may follow).
    pub last_found_new: bool,
    /// Metric calls allowed and used.
    pub budget: MetricBudget,
    /// Reflection model calls made.
    pub reflection_calls: u64,
    /// Reflection replies discarded because they were not instructions (see
    /// [`crate::instruction`]).
    #[serde(default)]
    pub rejected_proposals: u64,
    /// The iteration log.
    pub log: Vec<IterationRecord>,
}

impl RunState {
    /// A fresh run's state.
    pub fn new(
        seed: u64,
        config: GepaConfig,
        train_size: usize,
        val_size: usize,
        max_metric_calls: Option<u64>,
    ) -> Self {
        let sampler = EpochSampler::new(train_size, config.reflection_minibatch_size);
        Self {
            version: STATE_VERSION,
            seed,
            config,
            train_size,
            val_size,
            candidates: Vec::new(),
            iteration: 0,
            sampler,
            ledger: MergeLedger::default(),
            merges_due: 0,
            merges_accepted: 0,
            merges_tried: 0,
            last_found_new: false,
            budget: MetricBudget::new(max_metric_calls),
            reflection_calls: 0,
            rejected_proposals: 0,
            log: Vec::new(),
        }
    }

    /// The active candidates' frontier.
    pub fn frontier(&self) -> Frontier {
        let mut frontier = Frontier::new(self.val_size);
        for c in self.candidates.iter().filter(|c| c.active) {
            frontier.insert(c.id, &c.val_scores);
        }
        frontier
    }

    /// Average validation score of every candidate (retired ones included).
    pub fn averages(&self) -> BTreeMap<usize, f64> {
        self.candidates
            .iter()
            .map(|c| (c.id, c.average()))
            .collect()
    }

    /// Average validation score of the active candidates.
    pub fn active_averages(&self) -> BTreeMap<usize, f64> {
        self.candidates
            .iter()
            .filter(|c| c.active)
            .map(|c| (c.id, c.average()))
            .collect()
    }

    /// The best candidate: highest average (ties: lowest id).
    pub fn best(&self) -> Option<&CandidateEntry> {
        let mut best: Option<&CandidateEntry> = None;
        for c in &self.candidates {
            if best.is_none_or(|b| c.average() > b.average()) {
                best = Some(c);
            }
        }
        best
    }

    /// Checks that a saved run fits the one being started. With `seeded_demos` (the run gives
    /// its seed bootstrapped demos) the saved seed is compared with `initial` without its demos.
    pub fn check_compatible(
        &self,
        seed: u64,
        train_size: usize,
        val_size: usize,
        initial: &ProgramState,
        seeded_demos: bool,
        path: &Path,
    ) -> Result<(), OptimizeError> {
        let mismatch = |what: &str| {
            Err(OptimizeError::InvalidRequest {
                location: Some(path.to_path_buf()),
                message: format!("cannot resume: the saved run has a different {what}"),
            })
        };
        if self.version != STATE_VERSION {
            return mismatch("state format version");
        }
        if self.seed != seed {
            return mismatch("seed");
        }
        if self.train_size != train_size || self.val_size != val_size {
            return mismatch("training or validation set size");
        }
        let saved_seed = self.candidates.first().map(|c| {
            let mut state = c.state.clone();
            if seeded_demos {
                for p in state.predictors.values_mut() {
                    p.demos.clear();
                }
            }
            state
        });
        if saved_seed.as_ref() != Some(initial) {
            return mismatch("initial program state");
        }
        let consistent = self.candidates.iter().enumerate().all(|(i, c)| {
            c.id == i && c.parents.iter().all(|&p| p < i) && c.val_scores.len() == val_size
        }) && self.sampler.draws.len() == train_size
            && self.sampler.order.iter().all(|&k| k < train_size);
        if !consistent {
            return Err(OptimizeError::InvalidRequest {
                location: Some(path.to_path_buf()),
                message: "cannot resume: the saved run's candidates or minibatch order are \
                          inconsistent with its sizes"
                    .to_string(),
            });
        }
        Ok(())
    }
}

/// The run directory's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A run directory at `root` (created on the first save).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state file.
    pub fn state_path(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }

    /// The stop file.
    pub fn stop_path(&self) -> PathBuf {
        self.root.join(STOP_FILE)
    }

    /// Whether someone asked the run to stop.
    pub async fn stop_requested(&self) -> bool {
        tokio::fs::try_exists(self.stop_path())
            .await
            .unwrap_or(false)
    }

    /// The saved state, `None` when there is none.
    pub async fn load(&self) -> Result<Option<RunState>, OptimizeError> {
        let path = self.state_path();
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                OptimizeError::InvalidRequest {
                    location: Some(path),
                    message: format!("unreadable GEPA state: {e}"),
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OptimizeError::io(path, e)),
        }
    }

    /// Saves the state atomically (write a temporary file, then rename it).
    pub async fn save(&self, state: &RunState) -> Result<(), OptimizeError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| OptimizeError::io(&self.root, e))?;
        let path = self.state_path();
        let tmp = self.root.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(state)?;
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| OptimizeError::io(&tmp, e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| OptimizeError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use promptopt_core::PredictorState;

    fn entry(id: usize, scores: Vec<f64>, parents: Vec<usize>, origin: Origin) -> CandidateEntry {
        CandidateEntry {
            id,
            state: ProgramState::single("p", PredictorState::new(format!("I{id}"))),
            parents,
            origin,
            val_scores: scores,
            iteration: id as u64,
            discovered_at: 0,
            active: true,
            next_predictor: 0,
        }
    }

    #[tokio::test]
    async fn state_round_trips_through_the_run_dir() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        assert!(run.load().await.unwrap().is_none());
        let mut s = RunState::new(3, GepaConfig::default(), 10, 4, Some(100));
        s.candidates
            .push(entry(0, vec![0.0, 1.0, 0.0, 0.0], vec![], Origin::Seed));
        s.candidates.push(entry(
            1,
            vec![1.0, 1.0, 0.0, 0.0],
            vec![0],
            Origin::Reflection {
                predictors: vec!["p".into()],
            },
        ));
        s.sampler.batch(0, 3);
        run.save(&s).await.unwrap();
        let back = run.load().await.unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.best().unwrap().id, 1);
        assert_eq!(back.frontier().len(), 2);
        assert_eq!(back.candidates[1].describe(), "#1 reflection on `p` of #0");
        let initial = s.candidates[0].state.clone();
        assert!(back
            .check_compatible(3, 10, 4, &initial, false, run.root())
            .is_ok());
        assert!(back
            .check_compatible(4, 10, 4, &initial, false, run.root())
            .is_err());
        assert!(!run.stop_requested().await);
        tokio::fs::write(run.stop_path(), b"").await.unwrap();
        assert!(run.stop_requested().await);
    }
}
