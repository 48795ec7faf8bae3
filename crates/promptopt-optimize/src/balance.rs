//! Label balance for the demos of a classifier.
//!
//! A small model tends to answer with the label its demos show most, and with the label of the
//! last demo. A biased teacher makes this worse: it succeeds mostly on examples of the label it
//! favours, so bootstrapped demos pile up on that label. Balancing gives each label an even
//! share of the demos (a quota of `ceil(k / labels)`) and interleaves the labels so no label
//! fills the end of the list.

use std::collections::BTreeMap;

use promptopt_core::{Example, FieldType};

use promptopt_core::Stage;

/// How demos are balanced: the label field and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelBalance {
    /// The output field holding the label.
    pub field: String,
    /// The labels, in the signature's order.
    pub labels: Vec<String>,
}

impl LabelBalance {
    /// The first label output field of the program's predictors, if any has one with at least
    /// two labels.
    pub fn for_predictors(predictors: &[Stage]) -> Option<Self> {
        predictors.iter().find_map(|p| {
            p.signature.outputs.iter().find_map(|f| match &f.ty {
                FieldType::Label { allowed } if allowed.len() > 1 => Some(Self {
                    field: f.name.clone(),
                    labels: allowed.clone(),
                }),
                _ => None,
            })
        })
    }

    /// The label of an example, as the signature spells it (`None` when it has none).
    pub fn label_of(&self, example: &Example) -> Option<String> {
        let value = example.get(&self.field)?;
        let text = match value {
            serde_json::Value::String(s) => s.trim().to_string(),
            other => other.to_string(),
        };
        self.labels
            .iter()
            .find(|l| l.eq_ignore_ascii_case(&text))
            .cloned()
            .or(Some(text))
    }

    /// The most demos of one label among `k`.
    pub fn quota(&self, k: usize) -> usize {
        k.div_ceil(self.labels.len().max(1))
    }

    /// Up to `k` of `candidates` (in their order of preference), each label at most its quota;
    /// when the quotas leave places empty (too few examples of some label), the rest are filled
    /// in order of preference. `counts` holds the labels already taken and is updated.
    pub fn pick<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a Example>,
        k: usize,
        quota: usize,
        counts: &mut BTreeMap<String, usize>,
    ) -> Vec<Example> {
        let mut chosen = Vec::with_capacity(k);
        let mut skipped = Vec::new();
        for example in candidates {
            if chosen.len() >= k {
                break;
            }
            let label = self.label_of(example).unwrap_or_default();
            let count = counts.entry(label).or_insert(0);
            if *count < quota {
                *count += 1;
                chosen.push(example.clone());
            } else {
                skipped.push(example);
            }
        }
        for example in skipped {
            if chosen.len() >= k {
                break;
            }
            *counts
                .entry(self.label_of(example).unwrap_or_default())
                .or_insert(0) += 1;
            chosen.push(example.clone());
        }
        chosen
    }

    /// The demos reordered so labels take turns (round robin in order of first appearance),
    /// each label's demos keeping their order.
    pub fn interleave(&self, demos: Vec<Example>) -> Vec<Example> {
        let mut groups: Vec<(String, Vec<Example>)> = Vec::new();
        for demo in demos {
            let label = self.label_of(&demo).unwrap_or_default();
            match groups.iter_mut().find(|(l, _)| *l == label) {
                Some((_, group)) => group.push(demo),
                None => groups.push((label, vec![demo])),
            }
        }
        let total = groups.iter().map(|(_, g)| g.len()).sum();
        let mut queues: Vec<std::vec::IntoIter<Example>> =
            groups.into_iter().map(|(_, g)| g.into_iter()).collect();
        let mut out = Vec::with_capacity(total);
        while out.len() < total {
            for queue in &mut queues {
                if let Some(demo) = queue.next() {
                    out.push(demo);
                }
            }
        }
        out
    }
}

/// Counts of each label among `demos`.
pub fn label_counts(balance: &LabelBalance, demos: &[Example]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for demo in demos {
        *counts
            .entry(balance.label_of(demo).unwrap_or_default())
            .or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balance() -> LabelBalance {
        LabelBalance {
            field: "label".into(),
            labels: vec!["positive".into(), "negative".into()],
        }
    }

    fn ex(text: &str, label: &str) -> Example {
        Example::new().with("text", text).with("label", label)
    }

    fn labels(demos: &[Example]) -> Vec<String> {
        let b = balance();
        demos.iter().filter_map(|d| b.label_of(d)).collect()
    }

    #[test]
    fn pick_respects_the_quota_then_fills_in_order() {
        let b = balance();
        let pool = [
            ex("a", "positive"),
            ex("b", "Positive"),
            ex("c", "positive"),
            ex("d", "negative"),
            ex("e", "positive"),
        ];
        let mut counts = BTreeMap::new();
        let chosen = b.pick(&pool, 4, b.quota(4), &mut counts);
        let texts: Vec<_> = chosen.iter().filter_map(|d| d.text("text")).collect();
        // Two positives (quota), the negative, then the first skipped positive as filler.
        assert_eq!(texts, ["a", "b", "d", "c"]);
        assert_eq!(counts.get("positive"), Some(&3));
        assert_eq!(counts.get("negative"), Some(&1));
    }

    #[test]
    fn interleave_alternates_labels() {
        let b = balance();
        let demos = vec![
            ex("a", "positive"),
            ex("b", "positive"),
            ex("c", "positive"),
            ex("d", "negative"),
            ex("e", "negative"),
        ];
        assert_eq!(
            labels(&b.interleave(demos)),
            ["positive", "negative", "positive", "negative", "positive"]
        );
    }

    #[test]
    fn found_only_for_label_outputs() {
        use promptopt_core::{Field, Signature};
        let text = Stage::new(
            "p",
            Signature::new(vec![Field::text("q")], vec![Field::text("a")]),
        );
        assert_eq!(LabelBalance::for_predictors(&[text]), None);
        let label = Stage::new(
            "p",
            Signature::new(
                vec![Field::text("q")],
                vec![Field::label("label", vec!["x".into(), "y".into()])],
            ),
        );
        assert_eq!(
            LabelBalance::for_predictors(&[label]).map(|b| b.field),
            Some("label".to_string())
        );
        assert_eq!(balance().quota(5), 3);
    }
}
