//! Choosing examples: spread over the input space, hard ones first, or at random.
//!
//! `diverse` represents each example by the TF-IDF vector of its input text and picks by
//! farthest-point traversal (k-center greedy): a seeded random first example, then repeatedly
//! the example least similar (cosine) to everything picked so far. `hard` orders examples by the
//! baseline's score on them, lowest (wrong) first. `random` is a seeded shuffle.

use std::collections::HashMap;

use promptopt_core::{value_to_text, Example};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How examples are ordered for bootstrapping and chosen as demos.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionStrategy {
    /// The training set's own order (DSPy's behaviour).
    #[default]
    InOrder,
    /// Spread over the input space (TF-IDF + farthest-point traversal).
    Diverse,
    /// Examples the baseline got wrong first.
    Hard,
    /// A seeded random order.
    Random,
}

impl SelectionStrategy {
    /// The names request files use.
    pub const NAMES: [&'static str; 4] = ["in_order", "diverse", "hard", "random"];

    /// The strategy of this name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "in_order" => Some(Self::InOrder),
            "diverse" => Some(Self::Diverse),
            "hard" => Some(Self::Hard),
            "random" => Some(Self::Random),
            _ => None,
        }
    }
}

/// The text of an example's input fields (`key: value` lines).
pub fn input_text(example: &Example, input_keys: &[String]) -> String {
    input_keys
        .iter()
        .filter_map(|k| example.get(k).map(value_to_text))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A sparse, L2-normalized vector.
pub type SparseVector = Vec<(usize, f64)>;

/// TF-IDF vectors of `texts` (smoothed idf, L2-normalized; terms indexed in first-seen order).
pub fn tfidf(texts: &[String]) -> Vec<SparseVector> {
    let mut vocab: HashMap<String, usize> = HashMap::new();
    let docs: Vec<HashMap<usize, f64>> = texts
        .iter()
        .map(|t| {
            let mut counts = HashMap::new();
            for token in tokens(t) {
                let next = vocab.len();
                let id = *vocab.entry(token).or_insert(next);
                *counts.entry(id).or_insert(0.0) += 1.0;
            }
            counts
        })
        .collect();
    let mut df = vec![0.0f64; vocab.len()];
    for doc in &docs {
        for id in doc.keys() {
            df[*id] += 1.0;
        }
    }
    let n = texts.len() as f64;
    docs.into_iter()
        .map(|doc| {
            let mut v: SparseVector = doc
                .into_iter()
                .map(|(id, tf)| (id, tf * (((1.0 + n) / (1.0 + df[id])).ln() + 1.0)))
                .collect();
            v.sort_by_key(|(id, _)| *id);
            let norm = v.iter().map(|(_, x)| x * x).sum::<f64>().sqrt();
            if norm > 0.0 {
                for (_, x) in &mut v {
                    *x /= norm;
                }
            }
            v
        })
        .collect()
}

/// Cosine similarity of two normalized sparse vectors (sorted by index).
pub fn cosine(a: &SparseVector, b: &SparseVector) -> f64 {
    let (mut i, mut j, mut dot) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    dot
}

/// Farthest-point order of `vectors`: a random first one, then each time the one whose highest
/// similarity to the ones already chosen is lowest (ties go to the earlier index).
pub fn farthest_point_order(vectors: &[SparseVector], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let n = vectors.len();
    if n == 0 {
        return Vec::new();
    }
    let mut order = Vec::with_capacity(n);
    let mut chosen = vec![false; n];
    let mut max_sim = vec![f64::NEG_INFINITY; n];
    let mut current = rng.gen_range(0..n);
    loop {
        chosen[current] = true;
        order.push(current);
        if order.len() == n {
            break;
        }
        let mut best: Option<(usize, f64)> = None;
        for i in 0..n {
            if chosen[i] {
                continue;
            }
            max_sim[i] = max_sim[i].max(cosine(&vectors[i], &vectors[current]));
            if best.is_none_or(|(_, s)| max_sim[i] < s) {
                best = Some((i, max_sim[i]));
            }
        }
        match best {
            Some((i, _)) => current = i,
            None => break,
        }
    }
    order
}

/// The order in which `examples` are tried or chosen under `strategy`. `baseline` gives, per
/// example, the baseline's normalized score (0–1) on it: [`SelectionStrategy::Hard`] puts the
/// lowest first (ties in a seeded random order; without scores `hard` is a random order).
pub fn order(
    strategy: SelectionStrategy,
    examples: &[Example],
    input_keys: &[String],
    baseline: Option<&[f64]>,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..examples.len()).collect();
    match strategy {
        SelectionStrategy::InOrder => idx,
        SelectionStrategy::Random => {
            idx.shuffle(rng);
            idx
        }
        SelectionStrategy::Diverse => {
            let texts: Vec<String> = examples.iter().map(|e| input_text(e, input_keys)).collect();
            farthest_point_order(&tfidf(&texts), rng)
        }
        SelectionStrategy::Hard => {
            idx.shuffle(rng);
            if let Some(scores) = baseline {
                // Stable: lowest scores first, ties in the shuffled order.
                idx.sort_by(|&a, &b| {
                    let sa = scores.get(a).copied().unwrap_or(1.0);
                    let sb = scores.get(b).copied().unwrap_or(1.0);
                    sa.total_cmp(&sb)
                });
            }
            idx
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;

    fn ex(text: &str) -> Example {
        Example::new().with("text", text)
    }

    #[test]
    fn diverse_picks_one_of_each_cluster_first() {
        let examples: Vec<Example> = [
            "the movie was great fun",
            "the movie was great and fun",
            "great fun movie the",
            "stock markets fell sharply today",
            "markets fell sharply on stocks",
            "the football team won the cup final",
            "team won the cup final football",
        ]
        .iter()
        .map(|t| ex(t))
        .collect();
        let keys = vec!["text".to_string()];
        for seed in 0..5 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let o = order(SelectionStrategy::Diverse, &examples, &keys, None, &mut rng);
            assert_eq!(o.len(), examples.len());
            let cluster = |i: usize| match i {
                0..=2 => 0,
                3..=4 => 1,
                _ => 2,
            };
            let mut first3: Vec<usize> = o[..3].iter().map(|&i| cluster(i)).collect();
            first3.sort();
            assert_eq!(first3, vec![0, 1, 2], "seed {seed}: order {o:?}");
        }
    }

    #[test]
    fn hard_puts_wrong_examples_first_and_random_is_seeded() {
        let examples: Vec<Example> = (0..6).map(|i| ex(&format!("x{i}"))).collect();
        let keys = vec!["text".to_string()];
        let baseline = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let o = order(
            SelectionStrategy::Hard,
            &examples,
            &keys,
            Some(&baseline),
            &mut rng,
        );
        let mut head: Vec<usize> = o[..2].to_vec();
        head.sort();
        assert_eq!(head, vec![1, 3]);
        let a = order(
            SelectionStrategy::Random,
            &examples,
            &keys,
            None,
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        let b = order(
            SelectionStrategy::Random,
            &examples,
            &keys,
            None,
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert_eq!(a, b);
        assert_eq!(
            order(SelectionStrategy::InOrder, &examples, &keys, None, &mut rng),
            vec![0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn tfidf_vectors_are_normalized() {
        let v = tfidf(&["a b b".to_string(), "b c".to_string(), String::new()]);
        let norm: f64 = v[0].iter().map(|(_, x)| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-9);
        assert!(v[2].is_empty());
        assert!((cosine(&v[0], &v[0]) - 1.0).abs() < 1e-9);
    }
}
