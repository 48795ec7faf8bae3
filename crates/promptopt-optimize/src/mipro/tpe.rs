//! A tree-structured Parzen estimator (TPE) over categorical parameters.
//!
//! This is the sampler MIPROv2 uses to pick an instruction and a demo set per predictor. It follows
//! the semantics of Optuna's `TPESampler` restricted to categorical distributions:
//!
//! * the first `n_startup_trials` completed trials are drawn uniformly at random;
//! * afterwards the completed trials are split by score into the `gamma(n) = min(ceil(0.1 n), 25)`
//!   best ("below", the good group) and the rest ("above"), each kept in trial-number order;
//! * each group becomes a Parzen estimator: a mixture with one kernel per observed trial plus one
//!   prior kernel. Mixture weights are [`default_weights`] for the observations followed by
//!   `prior_weight`, normalised. A trial's kernel puts `1 + prior_weight / (n_obs + 1)` on its
//!   observed choice and `prior_weight / (n_obs + 1)` on every other choice, normalised per row;
//!   the prior kernel is uniform. An empty group is a single uniform kernel;
//! * `n_ei_candidates` joint candidates are drawn from the good estimator `l(x)` and the one with
//!   the largest `log l(x) - log g(x)` is returned (ties keep the first drawn).
//!
//! With `multivariate` (what MIPROv2 asks for) all parameters with more than one choice are drawn
//! jointly: a candidate picks one kernel and takes every parameter from it, and densities are
//! products over parameters inside each kernel. Without it each parameter runs the procedure on
//! its own. Parameters with a single choice are always `0`. All randomness comes from one seeded
//! [`ChaCha8Rng`], so a sampler replays exactly for a given seed and history (the draws are not
//! bit-identical to numpy's, only equal in distribution).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Optuna's default number of random trials before TPE starts.
pub const DEFAULT_N_STARTUP_TRIALS: usize = 10;
/// Optuna's default number of candidates drawn from `l(x)` per suggestion.
pub const DEFAULT_N_EI_CANDIDATES: usize = 24;
/// Optuna's default weight of the prior kernel.
pub const DEFAULT_PRIOR_WEIGHT: f64 = 1.0;

/// Settings of a [`TpeSampler`].
#[derive(Debug, Clone, PartialEq)]
pub struct TpeConfig {
    /// Completed trials needed before TPE replaces uniform random sampling.
    pub n_startup_trials: usize,
    /// Candidates drawn from the good estimator per suggestion (at least 1 is used).
    pub n_ei_candidates: usize,
    /// Weight of the prior kernel (a negative or non-finite value counts as `0`).
    pub prior_weight: f64,
    /// Draw all parameters jointly (Optuna's `multivariate=True`) or each on its own.
    pub multivariate: bool,
    /// Seed of the sampler's random number generator.
    pub seed: u64,
}

impl Default for TpeConfig {
    fn default() -> Self {
        Self {
            n_startup_trials: DEFAULT_N_STARTUP_TRIALS,
            n_ei_candidates: DEFAULT_N_EI_CANDIDATES,
            prior_weight: DEFAULT_PRIOR_WEIGHT,
            multivariate: true,
            seed: 0,
        }
    }
}

/// A categorical parameter: its name and how many choices it has (indices `0..n_choices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoricalParam {
    /// The parameter's name (for reports only).
    pub name: String,
    /// The number of choices; `0` is treated as `1`.
    pub n_choices: usize,
}

impl CategoricalParam {
    /// A parameter with `n_choices` choices.
    pub fn new(name: impl Into<String>, n_choices: usize) -> Self {
        Self {
            name: name.into(),
            n_choices: n_choices.max(1),
        }
    }
}

/// A completed trial as the sampler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TpeTrial {
    /// The trial number (creation order, shared by asked and added trials).
    pub number: usize,
    /// The chosen index of every parameter, in the order of the search space.
    pub params: Vec<usize>,
    /// The score (higher is better).
    pub value: f64,
}

/// A trial handed out by [`TpeSampler::ask`], to be reported back with [`TpeSampler::tell`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskedTrial {
    /// The trial number.
    pub number: usize,
    /// The suggested index of every parameter, in the order of the search space.
    pub params: Vec<usize>,
}

/// Optuna's default `gamma`: how many of `n` completed trials form the good group.
pub fn default_gamma(n: usize) -> usize {
    // ceil(0.1 * n) computed exactly in integers.
    n.div_ceil(10).min(25)
}

/// Optuna's default `weights` for `n` observations in trial-number order: all ones up to 25
/// observations, beyond that the oldest `n - 25` ramp linearly from `1/n` to `1`.
pub fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let mut weights = linspace(1.0 / n as f64, 1.0, n - 25);
    weights.extend(std::iter::repeat_n(1.0, 25));
    weights
}

/// `numpy.linspace(start, stop, num)` with the endpoint included.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut out: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
            out[num - 1] = stop;
            out
        }
    }
}

/// A Parzen estimator over one or more categorical parameters: a mixture of product kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct ParzenEstimator {
    /// Normalised mixture weights, one per kernel (the observations, then the prior).
    pub mixture_weights: Vec<f64>,
    /// Per parameter, per kernel, the normalised probability of every choice.
    pub kernels: Vec<Vec<Vec<f64>>>,
}

impl ParzenEstimator {
    /// Builds the estimator from observations (one row per trial in trial-number order, one
    /// chosen index per parameter), the parameters' choice counts and the prior weight.
    pub fn new(observations: &[Vec<usize>], n_choices: &[usize], prior_weight: f64) -> Self {
        let prior_weight = if prior_weight.is_finite() && prior_weight > 0.0 {
            prior_weight
        } else {
            0.0
        };
        let n_obs = observations.len();
        if n_obs == 0 {
            return Self {
                mixture_weights: vec![1.0],
                kernels: n_choices
                    .iter()
                    .map(|&n| vec![vec![1.0 / n.max(1) as f64; n.max(1)]])
                    .collect(),
            };
        }
        let mut mixture_weights = default_weights(n_obs);
        mixture_weights.push(prior_weight);
        normalise(&mut mixture_weights);
        let n_kernels = n_obs + 1;
        let kernels = n_choices
            .iter()
            .enumerate()
            .map(|(p, &n)| {
                let n = n.max(1);
                let mut rows = vec![vec![prior_weight / n_kernels as f64; n]; n_kernels];
                for (row, obs) in rows.iter_mut().zip(observations) {
                    let choice = obs.get(p).copied().unwrap_or(0).min(n - 1);
                    row[choice] += 1.0;
                }
                for row in &mut rows {
                    normalise(row);
                }
                rows
            })
            .collect();
        Self {
            mixture_weights,
            kernels,
        }
    }

    /// The number of kernels (observations plus the prior, or one for an empty group).
    pub fn n_kernels(&self) -> usize {
        self.mixture_weights.len()
    }

    /// The log density of a joint choice (one index per parameter).
    pub fn log_pdf(&self, x: &[usize]) -> f64 {
        let terms: Vec<f64> = (0..self.n_kernels())
            .map(|k| {
                let mut t = self.mixture_weights[k].ln();
                for (p, kernels) in self.kernels.iter().enumerate() {
                    let row = &kernels[k];
                    let choice = x.get(p).copied().unwrap_or(0).min(row.len() - 1);
                    t += row[choice].ln();
                }
                t
            })
            .collect();
        log_sum_exp(&terms)
    }

    /// The probability of a joint choice.
    pub fn pdf(&self, x: &[usize]) -> f64 {
        self.log_pdf(x).exp()
    }

    /// Draws `size` joint choices: a kernel from the mixture, then each parameter from it.
    pub fn sample(&self, rng: &mut ChaCha8Rng, size: usize) -> Vec<Vec<usize>> {
        (0..size)
            .map(|_| {
                let k = draw_index(&self.mixture_weights, rng.gen::<f64>());
                self.kernels
                    .iter()
                    .map(|kernels| draw_index(&kernels[k], rng.gen::<f64>()))
                    .collect()
            })
            .collect()
    }
}

fn normalise(v: &mut [f64]) {
    let sum: f64 = v.iter().sum();
    let sum = if sum == 0.0 { 1.0 } else { sum };
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The index `i` whose cumulative probability interval holds `u` (the count of cumulative sums
/// below `u`, as Optuna does), the last cumulative sum being forced to 1.
fn draw_index(probs: &[f64], u: f64) -> usize {
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if i + 1 == probs.len() || cum >= u {
            return i;
        }
    }
    0
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let max = if max.is_infinite() { 0.0 } else { max };
    terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln() + max
}

/// A TPE sampler over a fixed space of categorical parameters (maximising).
#[derive(Debug, Clone)]
pub struct TpeSampler {
    space: Vec<CategoricalParam>,
    config: TpeConfig,
    rng: ChaCha8Rng,
    trials: Vec<TpeTrial>,
    next_number: usize,
}

impl TpeSampler {
    /// A sampler over `space` with `config`.
    pub fn new(space: Vec<CategoricalParam>, config: TpeConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Self {
            space,
            config,
            rng,
            trials: Vec::new(),
            next_number: 0,
        }
    }

    /// The search space.
    pub fn space(&self) -> &[CategoricalParam] {
        &self.space
    }

    /// The completed trials, in the order they completed.
    pub fn trials(&self) -> &[TpeTrial] {
        &self.trials
    }

    /// Starts a trial: assigns the next trial number and suggests parameters.
    pub fn ask(&mut self) -> AskedTrial {
        let number = self.next_number;
        self.next_number += 1;
        let params = self.suggest();
        AskedTrial { number, params }
    }

    /// Completes an asked trial with its score. A non-finite score marks it failed: it is not
    /// used by later suggestions (as Optuna does with a NaN objective).
    pub fn tell(&mut self, trial: AskedTrial, value: f64) {
        if value.is_finite() {
            self.trials.push(TpeTrial {
                number: trial.number,
                params: trial.params,
                value,
            });
        }
    }

    /// Adds an externally evaluated, completed trial (Optuna's `study.add_trial`), which takes
    /// the next trial number. Returns that number, or `None` (nothing added) when `params` does
    /// not fit the space or `value` is not finite.
    pub fn add_trial(&mut self, params: Vec<usize>, value: f64) -> Option<usize> {
        let fits = params.len() == self.space.len()
            && params
                .iter()
                .zip(&self.space)
                .all(|(&c, p)| c < p.n_choices);
        if !fits || !value.is_finite() {
            return None;
        }
        let number = self.next_number;
        self.next_number += 1;
        self.trials.push(TpeTrial {
            number,
            params,
            value,
        });
        Some(number)
    }

    fn suggest(&mut self) -> Vec<usize> {
        let mut out = vec![0; self.space.len()];
        let varying: Vec<usize> = (0..self.space.len())
            .filter(|&i| self.space[i].n_choices > 1)
            .collect();
        if varying.is_empty() {
            return out;
        }
        if self.trials.len() < self.config.n_startup_trials {
            for &i in &varying {
                out[i] = self.rng.gen_range(0..self.space[i].n_choices);
            }
            return out;
        }
        if self.config.multivariate {
            let chosen = self.sample_group(&varying);
            for (&i, c) in varying.iter().zip(chosen) {
                out[i] = c;
            }
        } else {
            for &i in &varying {
                out[i] = self.sample_group(&[i])[0];
            }
        }
        out
    }

    /// Splits the completed trials into the good and the bad group, each in trial-number order.
    pub fn split(&self) -> (Vec<&TpeTrial>, Vec<&TpeTrial>) {
        let n = self.trials.len();
        let n_below = default_gamma(n).min(n);
        let mut by_score: Vec<&TpeTrial> = self.trials.iter().collect();
        // Stable: equal scores keep their order, as Python's `sorted(..., reverse=True)` does.
        by_score.sort_by(|a, b| b.value.total_cmp(&a.value));
        let mut below: Vec<&TpeTrial> = by_score[..n_below].to_vec();
        let mut above: Vec<&TpeTrial> = by_score[n_below..].to_vec();
        below.sort_by_key(|t| t.number);
        above.sort_by_key(|t| t.number);
        (below, above)
    }

    /// The good and bad estimators over the parameters `group` (indices into the space).
    pub fn estimators(&self, group: &[usize]) -> (ParzenEstimator, ParzenEstimator) {
        let (below, above) = self.split();
        let n_choices: Vec<usize> = group.iter().map(|&i| self.space[i].n_choices).collect();
        let observe = |trials: &[&TpeTrial]| -> Vec<Vec<usize>> {
            trials
                .iter()
                .map(|t| group.iter().map(|&i| t.params[i]).collect())
                .collect()
        };
        (
            ParzenEstimator::new(&observe(&below), &n_choices, self.config.prior_weight),
            ParzenEstimator::new(&observe(&above), &n_choices, self.config.prior_weight),
        )
    }

    fn sample_group(&mut self, group: &[usize]) -> Vec<usize> {
        let (l, g) = self.estimators(group);
        let candidates = l.sample(&mut self.rng, self.config.n_ei_candidates.max(1));
        let mut best: Option<(f64, &Vec<usize>)> = None;
        for c in &candidates {
            let acq = l.log_pdf(c) - g.log_pdf(c);
            if best.is_none_or(|(b, _)| acq > b) {
                best = Some((acq, c));
            }
        }
        best.map(|(_, c)| c.clone())
            .unwrap_or_else(|| vec![0; group.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn gamma_matches_optuna() {
        assert_eq!(default_gamma(0), 0);
        assert_eq!(default_gamma(1), 1);
        assert_eq!(default_gamma(10), 1);
        assert_eq!(default_gamma(11), 2);
        assert_eq!(default_gamma(100), 10);
        assert_eq!(default_gamma(249), 25);
        assert_eq!(default_gamma(1000), 25);
    }

    #[test]
    fn weights_ramp_after_25_observations() {
        assert!(default_weights(0).is_empty());
        assert_eq!(default_weights(24), vec![1.0; 24]);
        assert_eq!(default_weights(25), vec![1.0; 25]);
        let w = default_weights(28);
        assert_eq!(w.len(), 28);
        // linspace(1/28, 1, 3) = [1/28, (1 + 1/28) / 2, 1]
        assert!(close(w[0], 1.0 / 28.0));
        assert!(close(w[1], (1.0 / 28.0 + 1.0) / 2.0));
        assert!(close(w[2], 1.0));
        assert!(w[3..].iter().all(|&x| x == 1.0));
        let w = default_weights(26);
        assert!(close(w[0], 1.0 / 26.0));
    }

    #[test]
    fn categorical_kernels_match_hand_computation() {
        // Three choices, observations 0 and 2, prior weight 1: three kernels, each row starts at
        // 1/3 per choice; observed choices get +1; rows sum to 2 and are halved.
        let pe = ParzenEstimator::new(&[vec![0], vec![2]], &[3], 1.0);
        assert_eq!(pe.n_kernels(), 3);
        for w in &pe.mixture_weights {
            assert!(close(*w, 1.0 / 3.0));
        }
        let rows = &pe.kernels[0];
        let expect = [
            [2.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0],
            [1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0],
            [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
        ];
        for (row, e) in rows.iter().zip(expect) {
            for (a, b) in row.iter().zip(e) {
                assert!(close(*a, b), "{row:?} vs {e:?}");
            }
        }
        // p(0) = (2/3 + 1/6 + 1/3) / 3 = 7/18, p(1) = (1/6 + 1/6 + 1/3) / 3 = 2/9.
        assert!(close(pe.pdf(&[0]), 7.0 / 18.0));
        assert!(close(pe.pdf(&[1]), 2.0 / 9.0));
        assert!(close(pe.pdf(&[2]), 7.0 / 18.0));
    }

    #[test]
    fn multivariate_density_is_a_mixture_of_products() {
        // Two parameters with 2 choices each, one observation (1, 0), prior weight 1:
        // kernel rows fill 1/2 and the observed choice gets +1, so the observation kernel is
        // [1/4, 3/4] x [3/4, 1/4] and the prior is uniform; mixture weights 1/2 each.
        let pe = ParzenEstimator::new(&[vec![1, 0]], &[2, 2], 1.0);
        let p10 = 0.5 * (0.75 * 0.75) + 0.5 * (0.5 * 0.5);
        let p01 = 0.5 * (0.25 * 0.25) + 0.5 * 0.25;
        assert!(close(pe.pdf(&[1, 0]), p10));
        assert!(close(pe.pdf(&[0, 1]), p01));
        let total: f64 = [[0, 0], [0, 1], [1, 0], [1, 1]]
            .iter()
            .map(|x| pe.pdf(x))
            .sum();
        assert!(close(total, 1.0));
    }

    #[test]
    fn densities_match_optuna_reference_values() {
        // Values printed by Optuna 5.0.0's own `_ParzenEstimator` (prior_weight 1, default
        // weights) for two categorical parameters with 3 and 4 choices.
        let xs = [[0, 0], [1, 1], [2, 3], [2, 0], [0, 3]];
        let obs: Vec<Vec<usize>> = [[0, 3], [2, 3], [1, 0], [2, 1], [2, 3]]
            .iter()
            .map(|o| o.to_vec())
            .collect();
        let pe = ParzenEstimator::new(&obs, &[3, 4], 1.0);
        let expect = [
            0.045370370370370366,
            0.045370370370370366,
            0.2231481481481481,
            0.06759259259259258,
            0.13425925925925924,
        ];
        for (x, e) in xs.iter().zip(expect) {
            assert!((pe.pdf(x) - e).abs() < 1e-12, "{x:?}: {} vs {e}", pe.pdf(x));
        }
        // Thirty observations: the oldest five get ramped weights.
        let obs: Vec<Vec<usize>> = (0..30).map(|i| vec![i % 3, (i * 7) % 4]).collect();
        let pe = ParzenEstimator::new(&obs, &[3, 4], 1.0);
        let expect = [
            0.07559668765465373,
            0.07484479506088151,
            0.10378886248376903,
            0.07531567729132471,
            0.07487517455961978,
        ];
        for (x, e) in xs.iter().zip(expect) {
            assert!((pe.pdf(x) - e).abs() < 1e-12, "{x:?}: {} vs {e}", pe.pdf(x));
        }
    }

    #[test]
    fn empty_group_is_uniform() {
        let pe = ParzenEstimator::new(&[], &[4], 1.0);
        assert_eq!(pe.n_kernels(), 1);
        assert!(close(pe.pdf(&[3]), 0.25));
    }

    #[test]
    fn ramped_weights_reach_the_mixture() {
        let obs: Vec<Vec<usize>> = (0..26).map(|i| vec![i % 2]).collect();
        let pe = ParzenEstimator::new(&obs, &[2], 1.0);
        let raw_sum = 1.0 / 26.0 + 25.0 + 1.0;
        assert!(close(pe.mixture_weights[0], (1.0 / 26.0) / raw_sum));
        assert!(close(pe.mixture_weights[26], 1.0 / raw_sum));
    }

    #[test]
    fn startup_trials_are_uniform_and_in_range() {
        let space = vec![CategoricalParam::new("a", 3), CategoricalParam::new("b", 1)];
        let mut s = TpeSampler::new(space, TpeConfig::default());
        let mut seen = [0usize; 3];
        for _ in 0..9 {
            let t = s.ask();
            assert_eq!(t.params[1], 0);
            seen[t.params[0]] += 1;
            s.tell(t, 0.5);
        }
        assert!(seen.iter().all(|&c| c > 0), "{seen:?}");
    }

    #[test]
    fn suggestion_maximises_the_density_ratio() {
        // Ten completed trials on one parameter with 3 choices: the best trial chose 2.
        // n = 10 → one good trial. l = mix(kernel at 2, prior), g = mix(9 kernels, prior).
        let space = vec![CategoricalParam::new("x", 3)];
        let mut s = TpeSampler::new(space, TpeConfig::default());
        let history = [0, 1, 0, 1, 2, 0, 1, 0, 1, 0];
        for (i, &x) in history.iter().enumerate() {
            let value = if x == 2 { 1.0 } else { 0.1 * i as f64 / 10.0 };
            assert_eq!(s.add_trial(vec![x], value), Some(i));
        }
        let (l, g) = s.estimators(&[0]);
        // l has two kernels (the good trial and the prior), so rows start at 1/2 per choice:
        // [1/2, 1/2, 3/2] / (5/2) = [1/5, 1/5, 3/5]; the prior is [1/3; 3]; weights 1/2 each.
        assert!(close(l.pdf(&[2]), 0.5 * 0.6 + 0.5 / 3.0));
        assert!(close(l.pdf(&[0]), 0.5 * 0.2 + 0.5 / 3.0));
        let ratios: Vec<f64> = (0..3).map(|x| l.log_pdf(&[x]) - g.log_pdf(&[x])).collect();
        let best = (0..3)
            .max_by(|&a, &b| ratios[a].total_cmp(&ratios[b]))
            .unwrap_or(0);
        assert_eq!(best, 2);
        // Choice 2 has l = 7/15, so it is among 24 draws except with probability (8/15)^24.
        let t = s.ask();
        assert_eq!(t.number, 10);
        assert_eq!(t.params, vec![2]);
    }

    #[test]
    fn same_seed_replays() {
        let run = |seed: u64| {
            let space = vec![CategoricalParam::new("a", 4), CategoricalParam::new("b", 5)];
            let config = TpeConfig {
                seed,
                ..TpeConfig::default()
            };
            let mut s = TpeSampler::new(space, config);
            let mut out = Vec::new();
            for _ in 0..30 {
                let t = s.ask();
                let v = (t.params[0] * 5 + t.params[1]) as f64;
                out.push(t.params.clone());
                s.tell(t, v);
            }
            out
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn failed_trials_and_bad_params_are_not_recorded() {
        let mut s = TpeSampler::new(vec![CategoricalParam::new("a", 2)], TpeConfig::default());
        let t = s.ask();
        s.tell(t, f64::NAN);
        assert!(s.trials().is_empty());
        assert_eq!(s.add_trial(vec![2], 1.0), None);
        assert_eq!(s.add_trial(vec![1, 0], 1.0), None);
        assert_eq!(s.add_trial(vec![1], 1.0), Some(1));
    }
}
