//! Epoch-shuffled minibatches of training examples, as GEPA draws them.
//!
//! Iteration `i` (counted from 0, merge iterations included) takes positions
//! `i*b .. i*b + b` of an order of the training indices. The order is reshuffled when `i*b`
//! enters a new epoch, and padded to a multiple of `b` with the indices drawn least often so
//! far (ties: lowest index). The shuffle of epoch `e` uses its own seeded stream, so the order
//! depends only on the seed, the epoch and the draw counts, which the run directory keeps.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Stream offset of epoch shuffles (iteration streams use `0..2^32`).
const EPOCH_STREAM: u64 = 1 << 40;

/// The sampler's state: saved with the run so a resumed run draws the same batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochSampler {
    /// Examples per minibatch.
    pub batch_size: usize,
    /// The current epoch, `None` before the first batch.
    pub epoch: Option<u64>,
    /// The current epoch's order (padded).
    pub order: Vec<usize>,
    /// How often each training index was placed in an order so far.
    pub draws: Vec<u64>,
}

impl EpochSampler {
    /// A sampler over `train_size` examples.
    pub fn new(train_size: usize, batch_size: usize) -> Self {
        Self {
            batch_size: batch_size.max(1),
            epoch: None,
            order: Vec::new(),
            draws: vec![0; train_size],
        }
    }

    /// The training indices of iteration `iteration`'s minibatch (empty without training data).
    pub fn batch(&mut self, iteration: u64, seed: u64) -> Vec<usize> {
        if self.draws.is_empty() {
            return Vec::new();
        }
        let b = self.batch_size as u64;
        let base = iteration * b;
        let epoch = match self.epoch {
            None => 0,
            Some(_) => base / (self.order.len().max(1) as u64),
        };
        if self.epoch.is_none_or(|current| epoch > current) {
            self.epoch = Some(epoch);
            self.reshuffle(seed, epoch);
        }
        let len = self.order.len() as u64;
        let start = (base % len) as usize;
        let end = (start + self.batch_size).min(self.order.len());
        self.order[start..end].to_vec()
    }

    fn reshuffle(&mut self, seed: u64, epoch: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(EPOCH_STREAM + epoch);
        let mut order: Vec<usize> = (0..self.draws.len()).collect();
        order.shuffle(&mut rng);
        for &i in &order {
            self.draws[i] += 1;
        }
        let rem = order.len() % self.batch_size;
        if rem != 0 {
            for _ in 0..self.batch_size - rem {
                let (least, _) = self
                    .draws
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(&b.0)))
                    .unwrap_or((0, &0));
                order.push(least);
                self.draws[least] += 1;
            }
        }
        self.order = order;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn an_epoch_covers_every_example_once_plus_padding() {
        let mut s = EpochSampler::new(7, 3);
        let mut seen = Vec::new();
        for i in 0..3 {
            seen.extend(s.batch(i, 42));
        }
        assert_eq!(seen.len(), 9);
        let distinct: BTreeSet<usize> = seen.iter().copied().collect();
        assert_eq!(distinct.len(), 7);
        // Padding takes the least-drawn indices (all drawn once): 0, then 1.
        assert_eq!(&seen[7..], &[0, 1]);
        assert_eq!(s.epoch, Some(0));
        // Iteration 3 starts epoch 1 with a fresh shuffle.
        let next = s.batch(3, 42);
        assert_eq!(s.epoch, Some(1));
        assert_eq!(next.len(), 3);
        // In epoch 1 the padding avoids 0 and 1 (drawn twice already).
        assert!(!s.order[7..].contains(&0) && !s.order[7..].contains(&1));
    }

    #[test]
    fn same_seed_same_batches_and_state_round_trips() {
        let mut a = EpochSampler::new(10, 3);
        let mut b = EpochSampler::new(10, 3);
        for i in 0..5 {
            assert_eq!(a.batch(i, 9), b.batch(i, 9));
        }
        let json = serde_json::to_string(&a).unwrap();
        let mut c: EpochSampler = serde_json::from_str(&json).unwrap();
        for i in 5..12 {
            assert_eq!(a.batch(i, 9), c.batch(i, 9));
        }
        let mut d = EpochSampler::new(10, 3);
        assert_ne!(
            (0..4).flat_map(|i| d.batch(i, 10)).collect::<Vec<_>>(),
            (0..4)
                .flat_map(|i| EpochSampler::new(10, 3).batch(i, 9))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn batch_larger_than_train_set_is_padded() {
        let mut s = EpochSampler::new(2, 3);
        let batch = s.batch(0, 1);
        assert_eq!(batch.len(), 3);
        assert!(EpochSampler::new(0, 3).batch(0, 1).is_empty());
    }
}
