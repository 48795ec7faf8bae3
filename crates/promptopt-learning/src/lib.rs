//! Continuous learning for promptopt: the pieces that watch a deployed model and decide when to
//! retrain, deploy and roll back. They are pure (no I/O): the server's learning loop reads the
//! prediction log and feedback, feeds them here and carries out the decisions.
//!
//! - [`drift`]: change detectors over a stream (DDM and Page-Hinkley on the error rate, ADWIN on
//!   the metric) and distribution drift on inputs and output labels (population stability index).
//! - [`monitor`]: the live metric of each version over a rolling window, and the detectors fed
//!   with the production version's outcomes.
//! - [`dataset`]: the data of a retraining: original plus recent labelled examples, deduplicated,
//!   near duplicates removed, a recent slice held out.
//! - [`policy`]: the loop's state, when a retraining is due, whether a candidate is better, and
//!   the guard's verdict after a deployment.
//! - [`config`]: the `learning:` block.
//!
//! ```
//! use promptopt_learning::{config::LearningConfig, monitor::Monitor, policy};
//!
//! let config = LearningConfig::from_yaml("triggers: {new_labels: 100}\nwindow: 50\n")?;
//! let mut monitor = Monitor::new(config.window, &config.detectors)?;
//! for i in 0..300 {
//!     // Correct until outcome 150, then wrong one time in two.
//!     let score = if i >= 150 && i % 2 == 0 { 0.0 } else { 1.0 };
//!     monitor.observe("tickets@1.0.0", score, true);
//! }
//! assert!(monitor.last_signals().iter().any(|s| s.level == "drift"));
//! let state = policy::LoopState { labels_since_retrain: 120, ..Default::default() };
//! assert!(policy::due_trigger(&config, &state, 0.0, None).is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod dataset;
pub mod drift;
mod error;
pub mod monitor;
pub mod policy;

pub use error::LearningError;
