//! Exact k nearest neighbours of every point, the first step of UMAP and t-SNE.
//!
//! Distances for a block of rows against all points come from one matrix product on the device
//! (‖x‖² + ‖y‖² − 2x·y); the host picks each row's k smallest and recomputes those k distances
//! directly, because the expanded form loses precision for near neighbours.

use crate::error::Result;
use crate::model::to_vec;
use burn::tensor::{Device, Tensor, TensorData};

/// Rows per device block: bounds the [block, n] distance matrix read back at a time.
const BLOCK_ROWS: usize = 1024;

/// Each point's `k` nearest other points, nearest first (ties by index).
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    pub k: usize,
    /// [n, k] point indices.
    pub indices: Vec<u32>,
    /// [n, k] Euclidean distances (not squared).
    pub distances: Vec<f32>,
}

impl Neighbours {
    pub fn of(&self, i: usize) -> (&[u32], &[f32]) {
        let range = i * self.k..(i + 1) * self.k;
        (&self.indices[range.clone()], &self.distances[range])
    }
}

/// `points` is row-major [n, d]; `k` must be below n. `cancelled` is polled between blocks.
pub fn nearest_neighbours(
    points: &[f32],
    n: usize,
    d: usize,
    k: usize,
    device: &Device,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Neighbours>> {
    let k = k.min(n.saturating_sub(1));
    let all = Tensor::<2>::from_data(TensorData::new(points.to_vec(), vec![n, d]), device);
    let norms = all.clone().powi_scalar(2).sum_dim(1); // [n, 1]
    let all_t = all.clone().transpose();
    let norms_row = norms.clone().transpose(); // [1, n]
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    let mut candidates: Vec<(f32, u32)> = Vec::with_capacity(n);
    for start in (0..n).step_by(BLOCK_ROWS) {
        if cancelled() {
            return Ok(None);
        }
        let rows = BLOCK_ROWS.min(n - start);
        let block = all.clone().slice([start..start + rows, 0..d]);
        let block_norms = norms.clone().slice([start..start + rows, 0..1]);
        let squared = block_norms + norms_row.clone() - block.matmul(all_t.clone()) * 2.0;
        let squared = to_vec(squared)?;
        for (r, row) in squared.chunks_exact(n).enumerate() {
            let i = start + r;
            candidates.clear();
            candidates.extend(
                row.iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(j, &s)| (s, j as u32)),
            );
            // A margin of extra candidates guards against the expanded form's rounding
            // reordering the k-th and (k+1)-th neighbour.
            let keep = (k + 8).min(candidates.len());
            if keep < candidates.len() {
                candidates
                    .select_nth_unstable_by(keep, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                candidates.truncate(keep);
            }
            let x = &points[i * d..(i + 1) * d];
            for c in candidates.iter_mut() {
                let y = &points[c.1 as usize * d..(c.1 as usize + 1) * d];
                c.0 = x
                    .iter()
                    .zip(y)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
            }
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(dist, j) in candidates.iter().take(k) {
                indices.push(j);
                distances.push(dist);
            }
        }
    }
    Ok(Some(Neighbours {
        k,
        indices,
        distances,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_on_a_line_are_the_adjacent_points_nearest_first() {
        let device = Device::flex();
        let points: Vec<f32> = [0.0, 1.0, 3.0, 7.0, 15.0].into_iter().collect();
        let found = nearest_neighbours(&points, 5, 1, 2, &device, &|| false)
            .unwrap()
            .unwrap();
        assert_eq!(found.of(0), (&[1, 2][..], &[1.0, 3.0][..]));
        assert_eq!(found.of(2), (&[1, 0][..], &[2.0, 3.0][..]));
        assert_eq!(found.of(4), (&[3, 2][..], &[8.0, 12.0][..]));
    }
}
