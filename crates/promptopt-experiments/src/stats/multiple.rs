//! Correction for multiple comparisons (several treatments against one control, or several
//! metrics).

use super::valid_alpha;

/// Holm–Bonferroni step-down procedure: which of the `m` hypotheses to reject at family-wise
/// error rate `alpha`, in the order of `p_values`.
///
/// The p-values are sorted increasingly, `p₍₁₎ ≤ … ≤ p₍ₘ₎`; `p₍ₖ₎` is rejected while
/// `p₍ₖ₎ ≤ alpha / (m − k + 1)` holds for it and for every smaller one, and the procedure stops
/// at the first that fails. It controls the family-wise error rate like Bonferroni's
/// correction, and rejects at least as much.
///
/// A NaN p-value is never rejected (it counts in `m`, which is conservative); an invalid `alpha`
/// (outside `(0, 1)`) rejects nothing.
pub fn holm(p_values: &[f64], alpha: f64) -> Vec<bool> {
    let m = p_values.len();
    let mut rejected = vec![false; m];
    if !valid_alpha(alpha) {
        return rejected;
    }
    // NaN sorts last, after every number, so it ends the procedure.
    let key = |p: f64| if p.is_nan() { f64::INFINITY } else { p };
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| key(p_values[a]).total_cmp(&key(p_values[b])));
    for (rank, &index) in order.iter().enumerate() {
        let p = p_values[index];
        if p.is_nan() || p > alpha / (m - rank) as f64 {
            break;
        }
        rejected[index] = true;
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_list() {
        // Sorted: 0.01 ≤ 0.05/4 = 0.0125 (reject), 0.015 ≤ 0.05/3 (reject),
        // 0.03 > 0.05/2 = 0.025 (stop): 0.04 is kept although it is below 0.05.
        let p = [0.04, 0.01, 0.03, 0.015];
        assert_eq!(holm(&p, 0.05), vec![false, true, false, true]);
        // Bonferroni (0.0125 each) would only reject 0.01.
    }

    #[test]
    fn all_and_none() {
        assert_eq!(holm(&[0.001, 0.002, 0.003], 0.05), vec![true, true, true]);
        assert_eq!(holm(&[0.2, 0.5], 0.05), vec![false, false]);
        assert_eq!(holm(&[], 0.05), Vec::<bool>::new());
        assert_eq!(holm(&[0.01], 0.05), vec![true]);
        // The step-down stops at the first failure even if a later one would pass alone.
        assert_eq!(holm(&[0.026, 0.026], 0.05), vec![false, false]);
        assert_eq!(holm(&[0.025, 0.05], 0.05), vec![true, true]);
    }

    #[test]
    fn ties_and_invalid_values() {
        assert_eq!(
            holm(&[0.01, f64::NAN, 0.001], 0.05),
            vec![true, false, true]
        );
        assert_eq!(holm(&[f64::NAN, 0.02], 0.05), vec![false, true]);
        assert_eq!(holm(&[0.001], f64::NAN), vec![false]);
        assert_eq!(holm(&[0.001], 1.0), vec![false]);
    }
}
