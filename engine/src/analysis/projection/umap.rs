//! UMAP (McInnes, Healy & Melville, 2018) as umap-learn 0.5 computes it with its defaults:
//! 15 neighbours, min_dist 0.1, spread 1, five negative samples per positive one, 500 epochs up
//! to 10,000 points and 200 beyond. The one departure: the layout starts from PCA (umap-learn's
//! `init="pca"`) instead of a spectral embedding, which needs a sparse eigensolver.
//!
//! Single-threaded with a seeded generator, so a seed always gives the same layout.

use super::Work;
use super::knn::Neighbours;
use super::rng::SeededRng;
use crate::error::{EngineError, Result};

pub const NEIGHBOURS: usize = 15;
/// umap-learn's `find_ab_params(spread=1.0, min_dist=0.1)`: the curve 1 / (1 + a·d^(2b)) fitted
/// to the min_dist-shifted exponential.
const A: f64 = 1.576_943_460_269_765_2;
const B: f64 = 0.895_060_877_851_573_3;
const NEGATIVE_SAMPLE_RATE: usize = 5;
const SMOOTH_K_TOLERANCE: f64 = 1e-5;
const MIN_K_DIST_SCALE: f64 = 1e-3;

/// Each point's (rho, sigma): the distance to its nearest neighbour and the bandwidth that
/// makes its k neighbours' memberships sum to log2(k).
fn smooth_knn_distances(nn: &Neighbours) -> Vec<(f64, f64)> {
    // umap-learn counts the point itself as its own first neighbour.
    let k = nn.k + 1;
    let target = (k as f64).log2();
    let n = nn.indices.len() / nn.k.max(1);
    let mean_all: f64 =
        nn.distances.iter().map(|&d| d as f64).sum::<f64>() / nn.distances.len().max(1) as f64;
    (0..n)
        .map(|i| {
            let (_, dists) = nn.of(i);
            let rho = dists.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0) as f64;
            let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
            for _ in 0..64 {
                let psum: f64 = dists
                    .iter()
                    .map(|&d| {
                        let d = d as f64 - rho;
                        if d > 0.0 { (-d / mid).exp() } else { 1.0 }
                    })
                    .sum();
                if (psum - target).abs() < SMOOTH_K_TOLERANCE {
                    break;
                }
                if psum > target {
                    hi = mid;
                    mid = (lo + hi) / 2.0;
                } else {
                    lo = mid;
                    mid = if hi.is_infinite() {
                        mid * 2.0
                    } else {
                        (lo + hi) / 2.0
                    };
                }
            }
            // The self-distance 0 is part of umap-learn's mean.
            let mean_i = dists.iter().map(|&d| d as f64).sum::<f64>() / k as f64;
            let floor = MIN_K_DIST_SCALE * if rho > 0.0 { mean_i } else { mean_all };
            (rho, mid.max(floor))
        })
        .collect()
}

/// The fuzzy union of the k-neighbour graphs: edges (i, j, weight), both directions.
fn fuzzy_graph(nn: &Neighbours) -> Vec<(u32, u32, f64)> {
    let n = nn.indices.len() / nn.k.max(1);
    let sigmas = smooth_knn_distances(nn);
    let mut directed: std::collections::HashMap<(u32, u32), f64> =
        std::collections::HashMap::with_capacity(n * nn.k);
    for (i, &(rho, sigma)) in sigmas.iter().enumerate().take(n) {
        let (indices, dists) = nn.of(i);
        for (&j, &d) in indices.iter().zip(dists) {
            let d = d as f64;
            let w = if d - rho <= 0.0 || sigma == 0.0 {
                1.0
            } else {
                (-(d - rho) / sigma).exp()
            };
            directed.insert((i as u32, j), w);
        }
    }
    let mut edges: Vec<(u32, u32, f64)> = Vec::with_capacity(directed.len() * 2);
    for (&(i, j), &w) in &directed {
        let back = directed.get(&(j, i)).copied().unwrap_or(0.0);
        let union = w + back - w * back;
        edges.push((i, j, union));
        if !directed.contains_key(&(j, i)) {
            edges.push((j, i, union));
        }
    }
    edges.sort_by_key(|e| (e.0, e.1));
    edges
}

fn clip(v: f64) -> f64 {
    v.clamp(-4.0, 4.0)
}

/// Lays out `n` points in `dims` dimensions from their neighbours, starting from `init`
/// ([n, dims], e.g. PCA coordinates). Returns [n, dims], or Cancelled.
pub fn umap(
    nn: &Neighbours,
    init: &[f32],
    dims: usize,
    seed: u64,
    work: &Work,
) -> Result<Vec<f32>> {
    let n = init.len() / dims;
    if n <= NEIGHBOURS.min(2) {
        return Err(EngineError::Projection(format!(
            "UMAP needs more than 2 points, got {n}"
        )));
    }
    let epochs = if n <= 10_000 { 500 } else { 200 };
    let mut edges = fuzzy_graph(nn);
    let max_w = edges.iter().map(|e| e.2).fold(0.0f64, f64::max);
    edges.retain(|e| e.2 >= max_w / epochs as f64);

    let mut rng = SeededRng::new(seed);
    // umap-learn rescales any start to [0, 10] per axis; a little noise breaks exact ties.
    let mut y: Vec<f64> = init.iter().map(|&v| v as f64).collect();
    for axis in 0..dims {
        let (lo, hi) = (0..n)
            .map(|i| y[i * dims + axis])
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let span = (hi - lo).max(f64::MIN_POSITIVE);
        for i in 0..n {
            y[i * dims + axis] = 10.0 * (y[i * dims + axis] - lo) / span + 1e-4 * rng.normal();
        }
    }

    let epochs_per_sample: Vec<f64> = edges
        .iter()
        .map(|e| epochs as f64 / (epochs as f64 * e.2 / max_w))
        .collect();
    let epochs_per_negative: Vec<f64> = epochs_per_sample
        .iter()
        .map(|e| e / NEGATIVE_SAMPLE_RATE as f64)
        .collect();
    let mut next_sample = epochs_per_sample.clone();
    let mut next_negative = epochs_per_negative.clone();
    let mut current = vec![0.0f64; dims];
    for epoch in 0..epochs {
        if work.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let alpha = 1.0 - epoch as f64 / epochs as f64;
        let e_f = epoch as f64;
        for (edge, &(i, j, _)) in edges.iter().enumerate() {
            if next_sample[edge] > e_f {
                continue;
            }
            let (i, j) = (i as usize, j as usize);
            let d2: f64 = (0..dims)
                .map(|a| (y[i * dims + a] - y[j * dims + a]).powi(2))
                .sum();
            let coeff = if d2 > 0.0 {
                -2.0 * A * B * d2.powf(B - 1.0) / (A * d2.powf(B) + 1.0)
            } else {
                0.0
            };
            for a in 0..dims {
                let g = clip(coeff * (y[i * dims + a] - y[j * dims + a])) * alpha;
                y[i * dims + a] += g;
                y[j * dims + a] -= g;
            }
            next_sample[edge] += epochs_per_sample[edge];

            let negatives = ((e_f - next_negative[edge]) / epochs_per_negative[edge]) as i64;
            current.copy_from_slice(&y[i * dims..(i + 1) * dims]);
            for _ in 0..negatives.max(0) {
                let other = rng.below(n);
                if other == i {
                    continue;
                }
                let d2: f64 = (0..dims)
                    .map(|a| (current[a] - y[other * dims + a]).powi(2))
                    .sum();
                if d2 <= 0.0 {
                    continue;
                }
                let coeff = 2.0 * B / ((0.001 + d2) * (A * d2.powf(B) + 1.0));
                for a in 0..dims {
                    current[a] += clip(coeff * (current[a] - y[other * dims + a])) * alpha;
                }
            }
            y[i * dims..(i + 1) * dims].copy_from_slice(&current);
            next_negative[edge] += negatives.max(0) as f64 * epochs_per_negative[edge];
        }
        work.report((epoch + 1) as f32 / epochs as f32);
    }
    Ok(y.into_iter().map(|v| v as f32).collect())
}
