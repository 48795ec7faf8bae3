//! How similar two instructions are: Jaccard similarity of their word sets.
//!
//! Words are maximal runs of alphanumeric characters, lowercased. The measure is cheap, needs
//! no vocabulary and is symmetric; `diversity_penalty` turns it into a rule: a proposal whose
//! similarity to an earlier candidate of the same predictor exceeds `1 - diversity_penalty` is
//! too similar.

use std::collections::BTreeSet;

/// The lowercase alphanumeric words of `text`.
pub fn word_set(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// `|A ∩ B| / |A ∪ B|` over the word sets of `a` and `b` (1 when both have no words).
pub fn jaccard(a: &str, b: &str) -> f64 {
    let (a, b) = (word_set(a), word_set(b));
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// The highest similarity of `text` to any of `others` (0 when there are none).
pub fn max_similarity<'a>(text: &str, others: impl IntoIterator<Item = &'a str>) -> f64 {
    others
        .into_iter()
        .map(|o| jaccard(text, o))
        .fold(0.0, f64::max)
}

/// Whether `text` is too similar to one of `others` under `penalty` (from 0 to 1). Texts equal
/// up to whitespace are always too similar.
pub fn too_similar<'a>(
    text: &str,
    others: impl IntoIterator<Item = &'a str>,
    penalty: f64,
) -> bool {
    let normal = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let text_normal = normal(text);
    let others: Vec<&str> = others.into_iter().collect();
    if others.iter().any(|o| normal(o) == text_normal) {
        return true;
    }
    penalty > 0.0 && max_similarity(text, others.iter().copied()) > 1.0 - penalty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaccard_of_word_sets() {
        assert_eq!(jaccard("Classify the text.", "classify THE text"), 1.0);
        // {classify, the, review} vs {classify, the, text}: 2 shared of 4.
        assert_eq!(jaccard("Classify the review", "Classify the text"), 0.5);
        assert_eq!(jaccard("", ""), 1.0);
        assert_eq!(jaccard("a", ""), 0.0);
        assert_eq!(max_similarity("a b", ["a c", "a b c"]), 2.0 / 3.0);
    }

    #[test]
    fn penalty_sets_the_threshold() {
        let others = ["Classify the sentiment of the review."];
        assert!(too_similar(
            "Classify  the sentiment of the review.",
            others,
            0.0
        ));
        assert!(!too_similar(
            "Classify the sentiment of the movie review.",
            others,
            0.0
        ));
        // 5 shared words of 6: similarity 0.83 > 1 - 0.2.
        assert!(too_similar(
            "Classify the sentiment of the movie review.",
            others,
            0.2
        ));
        assert!(!too_similar(
            "Decide whether the critic liked the film.",
            others,
            0.2
        ));
    }
}
