//! Assigning units (users, sessions) to variants: sticky, weighted, and stable when weights change.
//!
//! A unit's variant is chosen by weighted rendezvous hashing: each variant scores
//! `-ln(u) / weight`, where `u` in (0, 1) is a hash of the experiment's salt, the unit id and the
//! variant's name, and the lowest score wins. A variant is chosen with probability exactly
//! `weight / Σ weights`; the same unit always gets the same variant while the weights stay; and
//! changing one variant's weight only moves units to or from that variant (no reshuffle among the
//! others), the fewest a split change can move.

use sha2::{Digest, Sha256};

/// A uniform number in (0, 1) from the salt, the unit and the variant.
fn unit_hash(salt: &str, unit: &str, variant: &str) -> f64 {
    let mut hasher = Sha256::new();
    for part in [salt, unit, variant] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // 53 bits, shifted off zero so `ln` is finite.
    ((u64::from_le_bytes(bytes) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The variant (index into `weights`) of `unit`. Variants with a weight ≤ 0 are never chosen;
/// `None` when no weight is positive.
pub fn assign(salt: &str, unit: &str, variants: &[(&str, f64)]) -> Option<usize> {
    variants
        .iter()
        .enumerate()
        .filter(|(_, (_, w))| w.is_finite() && *w > 0.0)
        .map(|(i, (name, w))| (i, -unit_hash(salt, unit, name).ln() / w))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The variant of a request without a unit: `u` is a uniform draw in [0, 1).
pub fn assign_random(u: f64, variants: &[(&str, f64)]) -> Option<usize> {
    let total: f64 = variants
        .iter()
        .map(|(_, w)| if w.is_finite() && *w > 0.0 { *w } else { 0.0 })
        .sum();
    if total <= 0.0 {
        return None;
    }
    let mut point = u.clamp(0.0, 1.0) * total;
    let mut last = None;
    for (i, (_, w)) in variants.iter().enumerate() {
        if !(w.is_finite() && *w > 0.0) {
            continue;
        }
        last = Some(i);
        if point < *w {
            return Some(i);
        }
        point -= w;
    }
    last
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn assignment_is_sticky_and_follows_the_weights() {
        let variants = [("control", 0.8), ("treatment", 0.2)];
        let mut counts = [0usize; 2];
        for i in 0..20_000 {
            let unit = format!("user-{i}");
            let a = assign("salt", &unit, &variants).unwrap();
            assert_eq!(assign("salt", &unit, &variants), Some(a));
            counts[a] += 1;
        }
        let share = counts[1] as f64 / 20_000.0;
        assert!((share - 0.2).abs() < 0.01, "{share}");
        // Another salt is another experiment: a different split of the same users.
        let moved = (0..2_000)
            .filter(|i| {
                let unit = format!("user-{i}");
                assign("salt", &unit, &variants) != assign("other", &unit, &variants)
            })
            .count();
        assert!(moved > 200, "{moved}");
    }

    #[test]
    fn changing_one_weight_moves_units_only_to_or_from_that_variant() {
        let before = [("a", 1.0), ("b", 1.0), ("c", 1.0)];
        let after = [("a", 1.0), ("b", 1.0), ("c", 2.0)];
        let mut moved = 0;
        for i in 0..10_000 {
            let unit = format!("u{i}");
            let x = assign("s", &unit, &before).unwrap();
            let y = assign("s", &unit, &after).unwrap();
            if x != y {
                moved += 1;
                assert_eq!(y, 2, "a unit moved between `a` and `b`");
            }
        }
        // From 1/3 to 1/2 of the units: about 1/6 move, the minimum.
        let share = f64::from(moved) / 10_000.0;
        assert!((share - 1.0 / 6.0).abs() < 0.02, "{share}");
    }

    #[test]
    fn random_assignment_and_zero_weights() {
        let variants = [("a", 0.0), ("b", 3.0), ("c", 1.0)];
        assert_eq!(assign_random(0.0, &variants), Some(1));
        assert_eq!(assign_random(0.74, &variants), Some(1));
        assert_eq!(assign_random(0.76, &variants), Some(2));
        assert_eq!(assign_random(1.0, &variants), Some(2));
        assert_eq!(assign_random(0.5, &[("a", 0.0)]), None);
        assert_eq!(assign("s", "u", &[("a", 0.0)]), None);
        for i in 0..1000 {
            assert_ne!(assign("s", &i.to_string(), &variants), Some(0));
        }
    }
}
