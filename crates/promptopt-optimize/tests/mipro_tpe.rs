//! The TPE sampler against random search on synthetic categorical objectives.
#![allow(clippy::unwrap_used)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use promptopt_optimize::mipro::tpe::{CategoricalParam, TpeConfig, TpeSampler};

/// An additive objective over `dims` categorical parameters with noisy observations.
struct Objective {
    effects: Vec<Vec<f64>>,
    noise: f64,
    rng: ChaCha8Rng,
}

impl Objective {
    fn new(seed: u64, dims: &[usize], noise: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(1_000 + seed);
        let effects = dims
            .iter()
            .map(|&n| (0..n).map(|_| rng.gen::<f64>()).collect())
            .collect();
        Self {
            effects,
            noise,
            rng,
        }
    }

    fn optimum(&self) -> Vec<usize> {
        self.effects
            .iter()
            .map(|e| (0..e.len()).max_by(|&a, &b| e[a].total_cmp(&e[b])).unwrap())
            .collect()
    }

    fn observe(&mut self, x: &[usize]) -> f64 {
        let mean: f64 = x.iter().zip(&self.effects).map(|(&c, e)| e[c]).sum();
        // Uniform noise of the given half-width (no extra distribution crate needed).
        mean + self.noise * (2.0 * self.rng.gen::<f64>() - 1.0)
    }
}

/// Trials until the optimum is first evaluated (capped at `cap`).
fn trials_to_optimum(seed: u64, dims: &[usize], startup: usize, cap: usize) -> usize {
    let mut objective = Objective::new(seed, dims, 0.3);
    let optimum = objective.optimum();
    let space = dims
        .iter()
        .enumerate()
        .map(|(i, &n)| CategoricalParam::new(format!("p{i}"), n))
        .collect();
    let config = TpeConfig {
        seed,
        n_startup_trials: startup,
        ..TpeConfig::default()
    };
    let mut sampler = TpeSampler::new(space, config);
    for trial in 1..=cap {
        let asked = sampler.ask();
        if asked.params == optimum {
            return trial;
        }
        let value = objective.observe(&asked.params);
        sampler.tell(asked, value);
    }
    cap
}

/// Mean trials until the optimum is first tried, over seeds 0..30 (cap 150), measured:
/// 6x6x6: TPE 35.4 vs random 108.7; 10x5: 18.4 vs 43.3; 8x8x5: 51.1 vs 116.8.
#[test]
fn tpe_finds_the_optimum_sooner_than_random_search() {
    let cap = 150;
    for dims in [vec![6, 6, 6], vec![10, 5], vec![8, 8, 5]] {
        let seeds = 0..30u64;
        let tpe: usize = seeds
            .clone()
            .map(|s| trials_to_optimum(s, &dims, 10, cap))
            .sum();
        let random: usize = seeds
            .map(|s| trials_to_optimum(s, &dims, usize::MAX, cap))
            .sum();
        let (tpe, random) = (tpe as f64 / 30.0, random as f64 / 30.0);
        assert!(tpe < 0.8 * random, "{dims:?}: tpe {tpe} vs random {random}");
    }
}
