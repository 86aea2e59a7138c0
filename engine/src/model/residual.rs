//! What a trace keeps of the residual stream after each layer: every token's hidden-state norm
//! and the stream's largest activations, the "massive activations" of Sun et al. that sit on
//! attention-sink tokens. Computed on the host from one read-back of the layer's output, per
//! input of a packed pass.

use super::to_vec;
use crate::error::Result;
use crate::trace::{MASSIVE_ROWS, ResidualFigures};
use burn::tensor::Tensor;

/// The figures of each input packed into `x` [T, hidden] (`lengths` tokens each, in order).
pub fn residual_figures(x: &Tensor<2>, lengths: &[usize]) -> Result<Vec<ResidualFigures>> {
    let [t, hidden] = x.dims();
    let values = to_vec(x.clone())?;
    let mut figures = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for &len in lengths {
        let end = (start + len).min(t);
        let rows = &values[start * hidden..end * hidden];
        figures.push(ResidualFigures {
            norms: rows
                .chunks_exact(hidden.max(1))
                .map(|row| row.iter().map(|v| v * v).sum::<f32>().sqrt())
                .collect(),
            massive: largest_activations(rows, hidden, MASSIVE_ROWS),
        });
        start = end;
    }
    Ok(figures)
}

/// The `count` entries of `rows` ([T, hidden], row-major) with the largest absolute value, as
/// (token, channel, value), largest first; of equal ones the earlier entry first.
pub fn largest_activations(rows: &[f32], hidden: usize, count: usize) -> Vec<[f32; 3]> {
    // (|value|, flat index), kept sorted largest first: one pass, a short insertion per entry
    // that beats the current smallest.
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(count + 1);
    for (at, &v) in rows.iter().enumerate() {
        let magnitude = v.abs();
        if magnitude.is_nan() || (best.len() == count && magnitude <= best[count - 1].0) {
            continue;
        }
        let slot = best.partition_point(|&(m, _)| m >= magnitude);
        best.insert(slot, (magnitude, at));
        best.truncate(count);
    }
    best.into_iter()
        .map(|(_, at)| {
            [
                (at / hidden.max(1)) as f32,
                (at % hidden.max(1)) as f32,
                rows[at],
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_activations_come_largest_first_with_their_token_and_channel() {
        // 3 tokens × 4 channels.
        let rows = [
            0.1, -9.0, 0.0, 2.0, //
            5.0, 0.0, -5.0, 0.0, //
            0.0, 0.0, 0.0, 30.0,
        ];
        let top = largest_activations(&rows, 4, 4);
        assert_eq!(
            top,
            vec![
                [2.0, 3.0, 30.0],
                [0.0, 1.0, -9.0],
                [1.0, 0.0, 5.0],
                [1.0, 2.0, -5.0]
            ]
        );
    }

    #[test]
    fn fewer_entries_than_asked_give_every_entry() {
        assert_eq!(largest_activations(&[1.0, -2.0], 2, 16).len(), 2);
    }
}
