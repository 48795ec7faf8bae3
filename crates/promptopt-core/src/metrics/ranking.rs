//! Ranking metrics: NDCG@k and mean average precision.
//!
//! The prediction's output is a ranking: a JSON list of ids, or a text of ids separated by
//! commas or line breaks (surrounding spaces and brackets/quotes are trimmed; repeated ids count
//! once, at their best rank). The gold is a list of relevant ids (each of relevance 1), a text of
//! ids like the prediction, or an object mapping ids to graded relevance (numbers; 0 or less is
//! not relevant).

use std::collections::HashSet;

use serde_json::Value;

use super::common::{gold, info, word_list};
use crate::{value_to_text, Example, Metric, MetricInfo, Prediction, Score, Trace};

/// Parses a ranking (ids in order, unique) from a JSON value.
pub fn parse_ranking(value: &Value) -> Vec<String> {
    let raw: Vec<String> = match value {
        Value::Array(items) => items.iter().map(value_to_text).collect(),
        Value::String(text) => text.split([',', '\n', ';']).map(str::to_string).collect(),
        Value::Null => Vec::new(),
        other => vec![value_to_text(other)],
    };
    let mut seen = HashSet::new();
    raw.into_iter()
        .map(|id| {
            id.trim()
                .trim_matches(|c: char| matches!(c, '[' | ']' | '"' | '\'' | '`'))
                .trim()
                .to_string()
        })
        .filter(|id| !id.is_empty() && seen.insert(id.clone()))
        .collect()
}

/// Parses gold relevance: `(id, relevance)` pairs with relevance above zero.
pub fn parse_relevance(value: &Value) -> Vec<(String, f64)> {
    match value {
        Value::Object(map) => map
            .iter()
            .filter_map(|(id, rel)| {
                let rel = match rel {
                    Value::Number(n) => n.as_f64()?,
                    Value::Bool(true) => 1.0,
                    Value::String(s) => s.trim().parse().ok()?,
                    _ => return None,
                };
                (rel > 0.0).then(|| (id.trim().to_string(), rel))
            })
            .collect(),
        other => parse_ranking(other)
            .into_iter()
            .map(|id| (id, 1.0))
            .collect(),
    }
}

/// NDCG@k with linear gain: `DCG = Σ rel_i / log2(i + 1)` over the first `k` ranks, divided by
/// the DCG of the ideal ordering. Zero when nothing is relevant.
pub fn ndcg_at_k(ranking: &[String], relevance: &[(String, f64)], k: usize) -> f64 {
    let rel_of = |id: &str| {
        relevance
            .iter()
            .find(|(r, _)| r == id)
            .map_or(0.0, |(_, v)| *v)
    };
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| rel_of(id) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<f64> = relevance.iter().map(|(_, v)| *v).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, rel)| rel / ((i + 2) as f64).log2())
        .sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// Average precision: the mean of precision@i over the ranks i that hold a relevant id,
/// divided by the number of relevant ids (so relevant ids never retrieved count as zero).
/// With a cutoff `k`, only the first `k` ranks count and the divisor is `min(relevant, k)`.
/// Zero when nothing is relevant.
pub fn average_precision(ranking: &[String], relevant: &[String], k: Option<usize>) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let cutoff = k.unwrap_or(usize::MAX);
    let mut hits = 0usize;
    let mut sum = 0.0;
    for (i, id) in ranking.iter().take(cutoff).enumerate() {
        if relevant.contains(id) {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / relevant.len().min(cutoff) as f64
}

fn ranking_of(prediction: &Prediction, key: &str) -> Result<Vec<String>, Score> {
    match prediction.outputs.get(key) {
        Some(value) if !value.is_null() => Ok(parse_ranking(value)),
        _ => Err(Score::with_feedback(
            0.0,
            format!("The prediction has no `{key}` field"),
        )),
    }
}

fn ranking_feedback(
    name: &str,
    value: f64,
    ranking: &[String],
    relevant: &[String],
    k: usize,
) -> String {
    let top: Vec<String> = ranking.iter().take(k).cloned().collect();
    let missed: Vec<String> = relevant
        .iter()
        .filter(|id| !top.contains(id))
        .cloned()
        .collect();
    let wrong: Vec<String> = top
        .iter()
        .filter(|id| !relevant.contains(id))
        .cloned()
        .collect();
    let mut feedback = format!("{name} {value:.3}");
    if !missed.is_empty() {
        feedback.push_str(&format!(
            "; relevant ids missing from the top {k}: {}",
            word_list(&missed, 10)
        ));
    }
    if !wrong.is_empty() {
        feedback.push_str(&format!(
            "; ranked but not relevant: {}",
            word_list(&wrong, 10)
        ));
    }
    feedback
}

/// NDCG@k of the ranking in the output field.
#[derive(Debug, Clone)]
pub struct Ndcg {
    output_key: String,
    k: usize,
}

impl Ndcg {
    /// NDCG@k of the field `output_key`.
    pub fn new(output_key: impl Into<String>, k: usize) -> Self {
        Self {
            output_key: output_key.into(),
            k: k.max(1),
        }
    }
}

impl Metric for Ndcg {
    fn info(&self) -> MetricInfo {
        info(&format!("ndcg@{}", self.k), true, 0.0, 1.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let key = self.output_key.as_str();
        let relevance = match gold(example, key, 0.0) {
            Ok(value) => parse_relevance(value),
            Err(score) => return score,
        };
        if relevance.is_empty() {
            return Score::with_feedback(
                0.0,
                format!("The example's `{key}` lists no relevant id"),
            );
        }
        let ranking = match ranking_of(prediction, key) {
            Ok(r) => r,
            Err(score) => return score,
        };
        let value = ndcg_at_k(&ranking, &relevance, self.k);
        let relevant: Vec<String> = relevance.into_iter().map(|(id, _)| id).collect();
        let name = format!("NDCG@{}", self.k);
        Score::with_feedback(
            value,
            ranking_feedback(&name, value, &ranking, &relevant, self.k),
        )
    }
}

/// Mean average precision of the ranking in the output field (the mean over examples of their
/// average precision), optionally cut at `k`.
#[derive(Debug, Clone)]
pub struct MeanAveragePrecision {
    output_key: String,
    k: Option<usize>,
}

impl MeanAveragePrecision {
    /// MAP of the field `output_key`, over the whole ranking or its first `k` ids.
    pub fn new(output_key: impl Into<String>, k: Option<usize>) -> Self {
        Self {
            output_key: output_key.into(),
            k: k.map(|k| k.max(1)),
        }
    }
}

impl Metric for MeanAveragePrecision {
    fn info(&self) -> MetricInfo {
        let name = match self.k {
            Some(k) => format!("map@{k}"),
            None => "map".to_string(),
        };
        info(&name, true, 0.0, 1.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let key = self.output_key.as_str();
        let relevant: Vec<String> = match gold(example, key, 0.0) {
            Ok(value) => parse_relevance(value)
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            Err(score) => return score,
        };
        if relevant.is_empty() {
            return Score::with_feedback(
                0.0,
                format!("The example's `{key}` lists no relevant id"),
            );
        }
        let ranking = match ranking_of(prediction, key) {
            Ok(r) => r,
            Err(score) => return score,
        };
        let value = average_precision(&ranking, &relevant, self.k);
        let shown = self.k.unwrap_or(ranking.len().max(relevant.len()));
        Score::with_feedback(
            value,
            ranking_feedback("Average precision", value, &ranking, &relevant, shown),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_rankings() {
        assert_eq!(
            parse_ranking(&json!("d3, d1\n d2,d1")),
            ids(&["d3", "d1", "d2"])
        );
        assert_eq!(parse_ranking(&json!(["a", 2, "a"])), ids(&["a", "2"]));
        assert_eq!(parse_ranking(&json!("[\"x\", \"y\"]")), ids(&["x", "y"]));
        assert_eq!(
            parse_relevance(&json!({"a": 3, "b": 0, "c": "1"})),
            vec![("a".to_string(), 3.0), ("c".to_string(), 1.0)]
        );
    }

    #[test]
    fn ndcg_by_hand() {
        // ranking: b a d ; relevance: a 3, b 2, c 1
        // DCG = 2/log2(2) + 3/log2(3) + 0 = 2 + 1.892789...
        // IDCG = 3/1 + 2/log2(3) + 1/log2(4) = 3 + 1.261859... + 0.5
        let relevance = parse_relevance(&json!({"a": 3, "b": 2, "c": 1}));
        let value = ndcg_at_k(&ids(&["b", "a", "d"]), &relevance, 10);
        let dcg = 2.0 + 3.0 / 3f64.log2();
        let idcg = 3.0 + 2.0 / 3f64.log2() + 0.5;
        assert!((value - dcg / idcg).abs() < 1e-12);
        // @1: 2 / 3
        assert!((ndcg_at_k(&ids(&["b", "a"]), &relevance, 1) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(ndcg_at_k(&ids(&["a", "b", "c"]), &relevance, 3), 1.0);
    }

    #[test]
    fn average_precision_by_hand() {
        // relevant: a c e ; ranking: a b c d ; hits at 1 and 3 -> (1 + 2/3) / 3
        let value = average_precision(&ids(&["a", "b", "c", "d"]), &ids(&["a", "c", "e"]), None);
        assert!((value - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        // @2: hit at 1 only -> 1 / min(3, 2)
        let value = average_precision(&ids(&["a", "b", "c"]), &ids(&["a", "c", "e"]), Some(2));
        assert!((value - 0.5).abs() < 1e-12);
    }

    #[test]
    fn map_is_the_mean_of_average_precision() {
        let metric = MeanAveragePrecision::new("docs", None);
        let e1 = Example::new().with("docs", json!(["a"]));
        let p1 = Prediction {
            outputs: Example::new().with("docs", "b, a"),
        };
        let e2 = Example::new().with("docs", json!(["x", "y"]));
        let p2 = Prediction {
            outputs: Example::new().with("docs", json!(["x", "y"])),
        };
        let s1 = metric.score(&e1, &p1, &Trace::default());
        let s2 = metric.score(&e2, &p2, &Trace::default());
        assert!((s1.value - 0.5).abs() < 1e-12);
        assert_eq!(s2.value, 1.0);
        assert_eq!(
            s1.feedback.unwrap(),
            "Average precision 0.500; ranked but not relevant: `b`"
        );
    }
}
