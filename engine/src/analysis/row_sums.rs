//! What one query row adds to its head's metrics, in loops the compiler vectorises. Drawing the
//! overview of a long input sums every row of every head this way (SmolLM2 at 8,192 tokens: 9
//! billion weights), and summed one weight at a time, with libm's `log` for the entropy, these
//! sums were half of that render under `perf`.
//!
//! Each sum runs in four independent f64 lanes (a reduction the compiler may not reorder does
//! not vectorise otherwise), and the entropy's logarithm is computed here, branch-free.

use super::metrics::{STREAMING_RECENT_TOKENS, STREAMING_SINK_TOKENS};
use std::ops::Range;

/// A query row's sums over its keys.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RowSums {
    /// −Σ_j a_j ln a_j.
    pub entropy: f64,
    /// Σ_j a_j |i − j|.
    pub distance: f64,
    /// Σ over special keys of a_j.
    pub to_special: f64,
    /// Σ_j a_j ‖v_j‖ over the keys with a known value norm.
    pub moved: f64,
    /// Σ over the streaming pattern's keys (the first sink tokens and the keys near the query).
    pub streaming: f64,
}

/// Query `i`'s sums over the keys `span` of its weights `row` (outside it the weights are 0),
/// adding each weight to `received[j]` where `received` reaches; `special` and `norms` count
/// where they reach.
pub fn row_sums(
    i: usize,
    row: &[f32],
    span: Range<usize>,
    special: &[bool],
    norms: &[f32],
    received: &mut [f64],
) -> RowSums {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { row_sums_avx2(i, row, span, special, norms, received) };
    }
    row_sums_body(i, row, span, special, norms, received)
}

/// [`row_sums`] compiled with AVX2 and FMA: four f64 lanes to a register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_sums_avx2(
    i: usize,
    row: &[f32],
    span: Range<usize>,
    special: &[bool],
    norms: &[f32],
    received: &mut [f64],
) -> RowSums {
    row_sums_body(i, row, span, special, norms, received)
}

#[inline(always)]
fn row_sums_body(
    i: usize,
    row: &[f32],
    span: Range<usize>,
    special: &[bool],
    norms: &[f32],
    received: &mut [f64],
) -> RowSums {
    let span = clip(row.len(), &span);
    let weights = &row[span.clone()];
    let query = i as f64;
    let first = span.start as f64;
    let entropy = -lanes_sum(weights, weights, first, |a, _, _| a_ln_a(a));
    let distance = lanes_sum(weights, weights, first, |a, _, j| {
        a as f64 * (query - j).abs()
    });
    let specials = clip(special.len(), &span);
    let to_special = lanes_sum(
        &row[specials.clone()],
        &special[specials],
        0.0,
        |a, s, _| {
            if s { a as f64 } else { 0.0 }
        },
    );
    let normed = clip(norms.len(), &span);
    let moved = lanes_sum(&row[normed.clone()], &norms[normed], 0.0, |a, n, _| {
        a as f64 * n as f64
    });
    let reached = clip(received.len(), &span);
    for (r, &a) in received[reached.clone()].iter_mut().zip(&row[reached]) {
        *r += a as f64;
    }
    // The streaming keys are the union of the sinks and the window around the query: add both,
    // less their overlap.
    let sum = |keys: Range<usize>| -> f64 {
        let keys = keys.start.max(span.start)..keys.end.min(span.end);
        row.get(keys)
            .map_or(0.0, |w| w.iter().map(|&a| a as f64).sum())
    };
    let sinks = 0..STREAMING_SINK_TOKENS;
    let near = (i + 1).saturating_sub(STREAMING_RECENT_TOKENS)..i + STREAMING_RECENT_TOKENS;
    let both = sinks.start.max(near.start)..sinks.end.min(near.end);
    let streaming = sum(sinks) + sum(near) - sum(both);
    RowSums {
        entropy,
        distance,
        to_special,
        moved,
        streaming,
    }
}

/// The part of `span` below `len`.
fn clip(len: usize, span: &Range<usize>) -> Range<usize> {
    let end = span.end.min(len);
    span.start.min(end)..end
}

/// Σ_k f(weights[k], other[k], first + k) over the two slices' common length, in four
/// independent lanes, so that it vectorises without reordering a sum the compiler may not
/// reorder.
#[inline(always)]
fn lanes_sum<B: Copy>(
    weights: &[f32],
    other: &[B],
    first: f64,
    f: impl Fn(f32, B, f64) -> f64,
) -> f64 {
    let n = weights.len().min(other.len());
    let (mut weights, mut other) = (weights[..n].chunks_exact(4), other[..n].chunks_exact(4));
    let mut lanes = [0.0f64; 4];
    let mut index = [first, first + 1.0, first + 2.0, first + 3.0];
    for (a, b) in (&mut weights).zip(&mut other) {
        for l in 0..4 {
            lanes[l] += f(a[l], b[l], index[l]);
            index[l] += 4.0;
        }
    }
    let mut rest = 0.0;
    for (k, (&a, &b)) in weights
        .remainder()
        .iter()
        .zip(other.remainder())
        .enumerate()
    {
        rest += f(a, b, index[0] + k as f64);
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + rest
}

/// a · ln a in f64 for a weight a, 0 for a = 0 (and for weights below f32's smallest normal,
/// whose terms are under 1e-36). Branch-free, so that it vectorises: a = m · 2^e with m in
/// [√½, √2), then ln m = 2 atanh s with s = (m − 1)/(m + 1), |s| ≤ 0.172, by its series to
/// s¹³ (the next term is under 2e-12 of ln m).
#[inline(always)]
fn a_ln_a(a: f32) -> f64 {
    let bits = a.to_bits();
    // The exponent and mantissa of an f32; through f32 rather than an integer cast to f64,
    // which has no vector instruction before AVX-512.
    let mut e = ((bits >> 23) & 0xff) as i32 as f32 - 127.0;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let high = m > std::f32::consts::SQRT_2;
    m = if high { m * 0.5 } else { m };
    e = if high { e + 1.0 } else { e };
    let m = m as f64;
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut p: f64 = 1.0 / 13.0;
    for c in [1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        p = p.mul_add(s2, c);
    }
    let ln = (e as f64).mul_add(std::f64::consts::LN_2, 2.0 * s * p);
    if a >= f32::MIN_POSITIVE {
        a as f64 * ln
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ln_a_is_libms_to_1e_12_over_the_f32_range_and_zero_at_zero() {
        assert_eq!(a_ln_a(0.0), 0.0);
        assert_eq!(a_ln_a(1.0), 0.0);
        let mut a = f32::MIN_POSITIVE;
        while a < 4.0 {
            for x in [a, a * 1.1, a * 1.41, a * 1.415, a * 1.7] {
                let want = x as f64 * (x as f64).ln();
                let got = a_ln_a(x);
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(x as f64),
                    "{x}: {got} against {want}"
                );
            }
            a *= 2.0;
        }
    }

    /// The sums the plain way, one weight at a time with libm's log.
    fn plain(
        i: usize,
        row: &[f32],
        span: Range<usize>,
        special: &[bool],
        norms: &[f32],
    ) -> RowSums {
        let mut sums = RowSums::default();
        for j in span {
            let a = row[j] as f64;
            if a > 0.0 {
                sums.entropy -= a * a.ln();
            }
            sums.distance += a * i.abs_diff(j) as f64;
            if special.get(j).copied().unwrap_or(false) {
                sums.to_special += a;
            }
            if let Some(&n) = norms.get(j) {
                sums.moved += a * n as f64;
            }
            if j < STREAMING_SINK_TOKENS || i.abs_diff(j) < STREAMING_RECENT_TOKENS {
                sums.streaming += a;
            }
        }
        sums
    }

    #[test]
    fn a_rows_sums_are_those_summed_one_weight_at_a_time() {
        let t = 301;
        let row: Vec<f32> = (0..t)
            .map(|j| {
                if j % 7 == 3 {
                    0.0
                } else {
                    ((j * 37 % 101) as f32 + 0.5) / 9000.0
                }
            })
            .collect();
        let special: Vec<bool> = (0..t).map(|j| j == 0 || j % 50 == 1).collect();
        let norms: Vec<f32> = (0..200).map(|j| 1.0 + j as f32 / 10.0).collect();
        for (i, span) in [
            (0, 0..1),
            (2, 0..3),
            (150, 0..151),
            (300, 0..301),
            (200, 137..201),
            (70, 5..5),
        ] {
            let mut received = vec![0.0; 250];
            let got = row_sums(i, &row, span.clone(), &special, &norms, &mut received);
            let want = plain(i, &row, span.clone(), &special, &norms[..]);
            for (name, g, w) in [
                ("entropy", got.entropy, want.entropy),
                ("distance", got.distance, want.distance),
                ("special", got.to_special, want.to_special),
                ("moved", got.moved, want.moved),
                ("streaming", got.streaming, want.streaming),
            ] {
                assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "row {i} {name}: {g} against {w}"
                );
            }
            for (j, &r) in received.iter().enumerate() {
                let want = if span.contains(&j) {
                    row[j] as f64
                } else {
                    0.0
                };
                assert_eq!(r, want, "row {i} received[{j}]");
            }
        }
    }
}
