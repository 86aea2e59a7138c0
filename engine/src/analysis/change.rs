//! How much a head's attention changed between two runs over the same tokens (an edited run and
//! its base, or two models of the same shape): the mean over queries of the total variation
//! distance between the two rows, ½ Σ_j |a_ij − b_ij|, in [0, 1] (0: the same attention, 1:
//! every query looks somewhere else entirely).

/// The change of one head from its two [T, T] matrices (row-major).
pub fn head_change(a: &[f32], b: &[f32], t: usize) -> f32 {
    if t == 0 || a.len() != b.len() {
        return f32::NAN;
    }
    let total: f64 = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum();
    (0.5 * total / t as f64) as f32
}

/// The change of one head from its rows, computed one at a time by `row_a` and `row_b` (for
/// attention kept as q, k and lse).
pub fn head_change_by_rows(
    t: usize,
    mut row_a: impl FnMut(usize, &mut [f32]),
    mut row_b: impl FnMut(usize, &mut [f32]),
) -> f32 {
    if t == 0 {
        return f32::NAN;
    }
    let (mut a, mut b) = (vec![0.0f32; t], vec![0.0f32; t]);
    let mut total = 0.0f64;
    for i in 0..t {
        row_a(i, &mut a);
        row_b(i, &mut b);
        total += a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>();
    }
    (0.5 * total / t as f64) as f32
}

/// KL(p ‖ q) in nats between two next-token distributions; entries of p that are 0 add nothing,
/// and a q of 0 where p is not is clamped to the smallest positive f32 (a finite, huge value).
pub fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(p, _)| **p > 0.0)
        .map(|(&p, &q)| p as f64 * ((p as f64).ln() - (q.max(f32::MIN_POSITIVE) as f64).ln()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_attention_changes_by_zero_and_a_moved_row_by_one() {
        let a = [1.0, 0.0, 0.5, 0.5];
        assert_eq!(head_change(&a, &a, 2), 0.0);
        let b = [0.0, 1.0, 0.5, 0.5];
        assert_eq!(head_change(&a, &b, 2), 0.5);
        let by_rows = head_change_by_rows(
            2,
            |i, r| r.copy_from_slice(&a[i * 2..i * 2 + 2]),
            |i, r| r.copy_from_slice(&b[i * 2..i * 2 + 2]),
        );
        assert_eq!(by_rows, 0.5);
    }

    #[test]
    fn kl_is_zero_for_equal_distributions_and_positive_otherwise() {
        let p = [0.5, 0.5, 0.0];
        assert_eq!(kl_divergence(&p, &p), 0.0);
        let q = [0.9, 0.1, 0.0];
        let want = 0.5 * (0.5f64 / 0.9).ln() + 0.5 * (0.5f64 / 0.1).ln();
        assert!((kl_divergence(&p, &q) - want).abs() < 1e-6);
    }
}
