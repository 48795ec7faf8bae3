//! The data of a retraining: the original training examples plus recent labelled predictions,
//! deduplicated, with near-duplicate inputs removed and a held-out slice of recent data kept
//! apart for validation.
//!
//! Rules, in order:
//! 1. Recent examples older than the window are dropped by the caller; here the newest
//!    `max_examples` are kept.
//! 2. Among recent examples, exact and near-duplicate inputs keep the newest (its label is the
//!    freshest word on that input).
//! 3. A shuffled `holdout_fraction` of the recent examples (at least `min_holdout`) is held out.
//! 4. Training is the original examples plus the remaining recent ones; an original example
//!    whose input near-duplicates a recent one is replaced by it (the label may have changed),
//!    and any training example near-duplicating a held-out input is removed, so the held-out
//!    slice measures inputs the new version has not seen.
//! 5. With `retire_stale_labels`, an original example whose label (its output fields) no recent
//!    example uses is left out: the label was renamed or retired.

use std::collections::BTreeSet;

use promptopt_core::{value_to_text, Example};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::DataConfig;

/// A labelled prediction: its inputs and the outputs it should have had.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// The inputs and the labelled outputs, as one example.
    pub example: Example,
    /// When the label arrived (seconds since the epoch).
    pub at: f64,
}

/// The assembled data.
#[derive(Debug, Clone, Default)]
pub struct RetrainData {
    /// What the retraining trains on.
    pub train: Vec<Example>,
    /// Recent examples held out to compare the new version with the current one.
    pub holdout: Vec<Example>,
    /// How it was assembled.
    pub stats: DataStats,
}

/// Counts of what [`assemble`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataStats {
    /// Original training examples.
    pub original: usize,
    /// Recent labelled examples considered.
    pub recent: usize,
    /// Recent examples dropped as exact duplicates of a newer one.
    pub duplicates: usize,
    /// Recent examples dropped as near duplicates of a newer one.
    pub near_duplicates: usize,
    /// Original examples replaced by a recent one on a near-duplicate input.
    pub replaced: usize,
    /// Training examples removed because they near-duplicate a held-out input.
    pub leaked: usize,
    /// Original examples left out because no recent example uses their label.
    pub retired: usize,
    /// Held-out examples.
    pub holdout: usize,
    /// Training examples.
    pub train: usize,
}

/// The words of an input, lower-cased, punctuation dropped.
fn words(example: &Example, input_keys: &[String]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for key in input_keys {
        if let Some(value) = example.get(key) {
            for word in value_to_text(value)
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                set.insert(word.to_lowercase());
            }
        }
    }
    set
}

/// The exact-duplicate key of an input: its words in order, normalised.
fn exact_key(example: &Example, input_keys: &[String]) -> String {
    input_keys
        .iter()
        .map(|key| {
            example
                .get(key)
                .map(value_to_text)
                .unwrap_or_default()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// Jaccard similarity of two word sets (1 for two empty inputs).
pub fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let common = a.intersection(b).count();
    let union = a.len() + b.len() - common;
    common as f64 / union as f64
}

/// The label of an example: its fields that are not inputs, as text.
fn label_of(example: &Example, input_keys: &[String]) -> String {
    example
        .fields()
        .iter()
        .filter(|(k, _)| !input_keys.contains(k))
        .map(|(k, v)| format!("{k}={}", value_to_text(v)))
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// Assembles the data of a retraining (see the module documentation); `seed` drives the
/// hold-out shuffle.
pub fn assemble(
    original: &[Example],
    recent: &[Labelled],
    input_keys: &[String],
    config: &DataConfig,
    seed: u64,
) -> RetrainData {
    let mut stats = DataStats {
        original: original.len(),
        ..DataStats::default()
    };
    // Newest first, at most `max_examples`.
    let mut newest: Vec<&Labelled> = recent.iter().collect();
    newest.sort_by(|a, b| b.at.total_cmp(&a.at));
    newest.truncate(config.max_examples);
    stats.recent = newest.len();

    let mut kept: Vec<(Example, BTreeSet<String>)> = Vec::new();
    let mut keys = BTreeSet::new();
    for item in newest {
        let key = exact_key(&item.example, input_keys);
        if !keys.insert(key) {
            stats.duplicates += 1;
            continue;
        }
        let set = words(&item.example, input_keys);
        if kept
            .iter()
            .any(|(_, other)| jaccard(&set, other) >= config.near_duplicate_jaccard)
        {
            stats.near_duplicates += 1;
            continue;
        }
        kept.push((item.example.clone(), set));
    }

    let recent_labels: BTreeSet<String> =
        kept.iter().map(|(e, _)| label_of(e, input_keys)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    kept.shuffle(&mut rng);
    let wanted = ((kept.len() as f64) * config.holdout_fraction).round() as usize;
    let n_holdout = wanted.max(config.min_holdout).min(kept.len());
    let recent_train = kept.split_off(n_holdout);
    let holdout = kept;

    let near = |set: &BTreeSet<String>, pool: &[(Example, BTreeSet<String>)]| {
        pool.iter()
            .any(|(_, other)| jaccard(set, other) >= config.near_duplicate_jaccard)
    };
    let mut train = Vec::with_capacity(original.len() + recent_train.len());
    for example in original {
        let set = words(example, input_keys);
        if config.retire_stale_labels
            && !recent_labels.is_empty()
            && !recent_labels.contains(&label_of(example, input_keys))
        {
            stats.retired += 1;
        } else if near(&set, &holdout) {
            stats.leaked += 1;
        } else if near(&set, &recent_train) {
            stats.replaced += 1;
        } else {
            train.push(example.clone());
        }
    }
    train.extend(recent_train.into_iter().map(|(e, _)| e));
    stats.holdout = holdout.len();
    stats.train = train.len();
    RetrainData {
        train,
        holdout: holdout.into_iter().map(|(e, _)| e).collect(),
        stats,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ex(text: &str, label: &str) -> Example {
        Example::new().with("text", text).with("label", label)
    }

    fn lab(text: &str, label: &str, at: f64) -> Labelled {
        Labelled {
            example: ex(text, label),
            at,
        }
    }

    fn keys() -> Vec<String> {
        vec!["text".to_string()]
    }

    #[test]
    fn duplicates_keep_the_newest_label_and_nothing_leaks_into_training() {
        let original = vec![
            ex("my invoice is wrong", "billing"),
            ex("the app crashes on start", "bug"),
        ];
        let recent = vec![
            lab("My invoice is wrong!", "payments", 10.0),
            lab("my invoice is wrong", "billing", 5.0),
            lab("refund my card payment please", "payments", 11.0),
            lab("refund my card payment please now", "payments", 12.0),
            lab("cannot log in to my account", "account", 13.0),
            lab("password reset mail never arrives", "account", 14.0),
        ];
        let config = DataConfig {
            holdout_fraction: 0.25,
            min_holdout: 1,
            near_duplicate_jaccard: 0.8,
            ..DataConfig::default()
        };
        let data = assemble(&original, &recent, &keys(), &config, 7);
        assert_eq!(data.stats.recent, 6);
        assert_eq!(data.stats.duplicates, 1);
        assert_eq!(data.stats.near_duplicates, 1);
        assert_eq!(data.stats.holdout, 1);
        assert_eq!(data.holdout.len(), 1);
        // The stale `billing` label on the invoice input is gone either way: replaced by the
        // recent label in training, or removed because the input is held out.
        assert!(!data
            .train
            .iter()
            .any(|e| e.text("label").as_deref() == Some("billing")));
        assert_eq!(data.stats.replaced + data.stats.leaked, 1);
        // No training input near-duplicates a held-out one.
        for held in &data.holdout {
            let set = words(held, &keys());
            assert!(data
                .train
                .iter()
                .all(|t| jaccard(&words(t, &keys()), &set) < 0.8));
        }
        assert_eq!(data.stats.train, data.train.len());
        // `bug` from the original data, and the three recent examples not held out.
        assert_eq!(data.train.len(), 4);
    }

    #[test]
    fn the_shuffle_follows_the_seed_and_the_newest_are_kept() {
        let recent: Vec<Labelled> = (0..40)
            .map(|i| {
                lab(
                    &format!("ticket number {i} about item{i}"),
                    "x",
                    f64::from(i),
                )
            })
            .collect();
        let config = DataConfig {
            max_examples: 20,
            ..DataConfig::default()
        };
        let a = assemble(&[], &recent, &keys(), &config, 1);
        let b = assemble(&[], &recent, &keys(), &config, 1);
        let c = assemble(&[], &recent, &keys(), &config, 2);
        assert_eq!(a.holdout, b.holdout);
        assert_ne!(a.holdout, c.holdout);
        assert_eq!(a.stats.recent, 20);
        assert_eq!(a.stats.holdout, 10, "0.3 of 20 is 6, below min_holdout 10");
        for e in a.train.iter().chain(&a.holdout) {
            let text = e.text("text").unwrap();
            let n: i32 = text.split(' ').nth(2).unwrap().parse().unwrap();
            assert!(n >= 20, "{text} is not among the newest 20");
        }
    }

    #[test]
    fn stale_labels_retire_only_when_asked() {
        let original = vec![
            ex("a dull film", "negative"),
            ex("a lovely film", "positive"),
            ex("the plot is fine", "good"),
        ];
        let recent = vec![
            lab("what a waste of time", "bad", 1.0),
            lab("truly great acting", "good", 2.0),
            lab("boring and long", "bad", 3.0),
            lab("fun for everyone", "good", 4.0),
        ];
        let mut config = DataConfig {
            min_holdout: 1,
            holdout_fraction: 0.25,
            ..DataConfig::default()
        };
        let kept = assemble(&original, &recent, &keys(), &config, 3);
        assert_eq!(kept.stats.retired, 0);
        assert_eq!(kept.train.len(), 3 + 3);
        config.retire_stale_labels = true;
        let retired = assemble(&original, &recent, &keys(), &config, 3);
        assert_eq!(retired.stats.retired, 2);
        assert!(retired
            .train
            .iter()
            .all(|e| matches!(e.text("label").as_deref(), Some("good" | "bad"))));
        assert_eq!(retired.train.len(), 1 + 3);
    }

    #[test]
    fn jaccard_of_word_sets() {
        let a = words(&ex("a b c", ""), &keys());
        let b = words(&ex("b c d", ""), &keys());
        assert!((jaccard(&a, &b) - 0.5).abs() < 1e-12);
        assert_eq!(jaccard(&BTreeSet::new(), &BTreeSet::new()), 1.0);
    }
}
