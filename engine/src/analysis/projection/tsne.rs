//! t-SNE (van der Maaten & Hinton, 2008) with the Barnes-Hut approximation (van der Maaten,
//! 2014), as scikit-learn computes it with its defaults: perplexity 30 over the 3·30 + 1 nearest
//! neighbours, early exaggeration 12 for the first 250 of 1,000 iterations (momentum 0.5, then
//! 0.8), learning rate max(n / 48, 50), per-parameter gains, angle 0.5, PCA start scaled to a
//! standard deviation of 1e-4.
//!
//! The repulsive forces are split over threads by point; every point's sum is formed in the
//! same order whatever the split, so a seed gives the same layout on any machine.

use super::Work;
use super::knn::Neighbours;
use crate::error::{EngineError, Result};

pub const PERPLEXITY: f64 = 30.0;
const EARLY_EXAGGERATION: f64 = 12.0;
const EXPLORATION_ITERATIONS: usize = 250;
const ITERATIONS: usize = 1000;
const THETA: f64 = 0.5;
const MIN_GAIN: f64 = 0.01;
const MIN_GRAD_NORM: f64 = 1e-7;
/// Below this a cell's points are so close that splitting further only costs memory.
const MAX_DEPTH: usize = 48;

/// How many neighbours t-SNE's sparse affinities use.
pub fn neighbour_count(n: usize) -> usize {
    (n.saturating_sub(1)).min((3.0 * PERPLEXITY + 1.0) as usize)
}

/// Symmetric affinities P as rows of (j, p_ij), summing to 1 over all pairs.
fn affinities(nn: &Neighbours) -> Vec<Vec<(u32, f64)>> {
    let n = nn.indices.len() / nn.k.max(1);
    let desired_entropy = PERPLEXITY.ln();
    let mut conditional = vec![0.0f64; n * nn.k];
    for i in 0..n {
        let (_, dists) = nn.of(i);
        let sq: Vec<f64> = dists.iter().map(|&d| (d as f64) * (d as f64)).collect();
        let row = &mut conditional[i * nn.k..(i + 1) * nn.k];
        let (mut beta, mut beta_min, mut beta_max) = (1.0f64, f64::NEG_INFINITY, f64::INFINITY);
        for _ in 0..100 {
            let mut sum = 0.0;
            for (p, &s) in row.iter_mut().zip(&sq) {
                *p = (-s * beta).exp();
                sum += *p;
            }
            if sum == 0.0 {
                sum = 1e-8;
            }
            let mut weighted = 0.0;
            for (p, &s) in row.iter_mut().zip(&sq) {
                *p /= sum;
                weighted += s * *p;
            }
            let diff = sum.ln() + beta * weighted - desired_entropy;
            if diff.abs() <= 1e-5 {
                break;
            }
            if diff > 0.0 {
                beta_min = beta;
                beta = if beta_max.is_infinite() {
                    beta * 2.0
                } else {
                    (beta + beta_max) / 2.0
                };
            } else {
                beta_max = beta;
                beta = if beta_min.is_infinite() {
                    beta / 2.0
                } else {
                    (beta + beta_min) / 2.0
                };
            }
        }
    }
    let mut rows: Vec<std::collections::BTreeMap<u32, f64>> = vec![Default::default(); n];
    for i in 0..n {
        let (indices, _) = nn.of(i);
        for (&j, &p) in indices.iter().zip(&conditional[i * nn.k..(i + 1) * nn.k]) {
            *rows[i].entry(j).or_default() += p;
            *rows[j as usize].entry(i as u32).or_default() += p;
        }
    }
    let total: f64 = rows
        .iter()
        .flat_map(|r| r.values())
        .sum::<f64>()
        .max(f64::EPSILON);
    rows.into_iter()
        .map(|r| r.into_iter().map(|(j, p)| (j, p / total)).collect())
        .collect()
}

/// A cell of the 2^dims-ary space-partitioning tree over the current layout.
#[derive(Clone)]
struct Cell {
    centre: [f64; 3],
    half_width: f64,
    mass_sum: [f64; 3],
    count: usize,
    /// Index of the first of 2^dims children, or 0 for a leaf (the root is never a child).
    children: usize,
    /// A leaf's point.
    point: usize,
}

struct Tree {
    dims: usize,
    cells: Vec<Cell>,
}

impl Tree {
    fn build(y: &[f64], dims: usize) -> Self {
        let n = y.len() / dims;
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for i in 0..n {
            for a in 0..dims {
                lo[a] = lo[a].min(y[i * dims + a]);
                hi[a] = hi[a].max(y[i * dims + a]);
            }
        }
        let mut centre = [0.0; 3];
        let mut half_width = 0.0f64;
        for a in 0..dims {
            centre[a] = (lo[a] + hi[a]) / 2.0;
            half_width = half_width.max((hi[a] - lo[a]) / 2.0);
        }
        let root = Cell {
            centre,
            half_width: half_width * (1.0 + 1e-6) + 1e-12,
            mass_sum: [0.0; 3],
            count: 0,
            children: 0,
            point: 0,
        };
        let mut tree = Self {
            dims,
            cells: vec![root],
        };
        for i in 0..n {
            tree.insert(0, i, y, 0);
        }
        tree
    }

    fn child_of(&self, cell: usize, p: &[f64]) -> usize {
        let c = &self.cells[cell];
        let index = (0..self.dims)
            .filter(|&a| p[a] > c.centre[a])
            .fold(0, |index, a| index | (1 << a));
        c.children + index
    }

    fn insert(&mut self, mut cell: usize, i: usize, y: &[f64], mut depth: usize) {
        let dims = self.dims;
        let p = &y[i * dims..(i + 1) * dims];
        loop {
            let c = &mut self.cells[cell];
            c.count += 1;
            for (sum, v) in c.mass_sum.iter_mut().zip(p) {
                *sum += v;
            }
            if c.children != 0 {
                cell = self.child_of(cell, p);
                depth += 1;
                continue;
            }
            if c.count == 1 {
                c.point = i;
                return;
            }
            if depth >= MAX_DEPTH {
                return;
            }
            // Split a leaf holding one point: push that point down, then go on with this one.
            let (centre, half, resident) = (c.centre, c.half_width / 2.0, c.point);
            let first = self.cells.len();
            self.cells[cell].children = first;
            for index in 0..(1usize << dims) {
                let mut child_centre = centre;
                for (a, c) in child_centre.iter_mut().enumerate().take(dims) {
                    *c += if index & (1 << a) != 0 { half } else { -half };
                }
                self.cells.push(Cell {
                    centre: child_centre,
                    half_width: half,
                    mass_sum: [0.0; 3],
                    count: 0,
                    children: 0,
                    point: 0,
                });
            }
            let q = &y[resident * dims..(resident + 1) * dims];
            let target = self.child_of(cell, q);
            let t = &mut self.cells[target];
            t.count = 1;
            t.point = resident;
            t.mass_sum[..dims].copy_from_slice(q);
            cell = self.child_of(cell, p);
            depth += 1;
        }
    }

    /// The tree as the force pass reads it: small f32 nodes, centres of mass worked out once.
    fn compact(&self) -> Vec<Node> {
        let dims = self.dims;
        self.cells
            .iter()
            .map(|c| {
                let mut com = [0.0f32; 3];
                if c.count > 0 {
                    for (m, s) in com.iter_mut().zip(&c.mass_sum).take(dims) {
                        *m = (s / c.count as f64) as f32;
                    }
                }
                let width = 2.0 * c.half_width;
                Node {
                    com,
                    far2: (width * width / (THETA * THETA)) as f32,
                    size: c.count as f32,
                    children: c.children as u32,
                    point: c.point as u32,
                }
            })
            .collect()
    }
}

/// A cell as the force pass reads it (28 bytes, so more of the tree stays in cache).
#[derive(Clone, Copy)]
struct Node {
    com: [f32; 3],
    /// Beyond this squared distance the cell counts as one body: (width / θ)².
    far2: f32,
    size: f32,
    children: u32,
    point: u32,
}

/// Point i's unnormalised repulsion Σ q²(y_i − y_j) and its share of Z = Σ q, over the tree.
fn repulsion(
    nodes: &[Node],
    dims: usize,
    p: [f32; 3],
    i: u32,
    force: &mut [f64],
    stack: &mut Vec<u32>,
) -> f64 {
    let mut z = 0.0f64;
    let mut sum = [0.0f64; 3];
    stack.clear();
    stack.push(0);
    while let Some(index) = stack.pop() {
        let c = &nodes[index as usize];
        if c.size == 0.0 {
            continue;
        }
        let delta = [p[0] - c.com[0], p[1] - c.com[1], p[2] - c.com[2]];
        let dist2 = delta[0] * delta[0] + delta[1] * delta[1] + delta[2] * delta[2];
        let leaf = c.children == 0;
        if leaf || dist2 > c.far2 {
            let mut size = c.size;
            if leaf && c.point == i {
                size -= 1.0;
                if size <= 0.0 {
                    continue;
                }
            }
            let q = 1.0 / (1.0 + dist2 as f64);
            let size = size as f64;
            z += size * q;
            let mult = size * q * q;
            for (s, d) in sum.iter_mut().zip(delta) {
                *s += mult * d as f64;
            }
        } else {
            stack.extend(c.children..c.children + (1u32 << dims));
        }
    }
    force.copy_from_slice(&sum[..dims]);
    z
}

/// One gradient of the KL divergence (scikit-learn's Barnes-Hut form, times its factor 4).
fn gradient(p: &[Vec<(u32, f64)>], y: &[f64], dims: usize, exaggeration: f64) -> Vec<f64> {
    let n = y.len() / dims;
    let nodes = Tree::build(y, dims).compact();
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(8);
    let chunk = n.div_ceil(threads).max(1);
    let mut repulsive = vec![0.0f64; n * dims];
    let mut z_parts = vec![0.0f64; n];
    std::thread::scope(|scope| {
        for (part, (forces, zs)) in repulsive
            .chunks_mut(chunk * dims)
            .zip(z_parts.chunks_mut(chunk))
            .enumerate()
        {
            let nodes = &nodes;
            scope.spawn(move || {
                let mut stack = Vec::with_capacity(256);
                for (offset, z) in zs.iter_mut().enumerate() {
                    let i = part * chunk + offset;
                    let mut p = [0.0f32; 3];
                    for (a, v) in p.iter_mut().enumerate().take(dims) {
                        *v = y[i * dims + a] as f32;
                    }
                    let force = &mut forces[offset * dims..(offset + 1) * dims];
                    *z = repulsion(nodes, dims, p, i as u32, force, &mut stack);
                }
            });
        }
    });
    let z: f64 = z_parts.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut grad = vec![0.0f64; n * dims];
    for i in 0..n {
        let yi = &y[i * dims..(i + 1) * dims];
        let mut attractive = [0.0f64; 3];
        for &(j, pij) in &p[i] {
            let yj = &y[j as usize * dims..(j as usize + 1) * dims];
            let dist2: f64 = (0..dims).map(|a| (yi[a] - yj[a]).powi(2)).sum();
            let w = pij * exaggeration / (1.0 + dist2);
            for a in 0..dims {
                attractive[a] += w * (yi[a] - yj[a]);
            }
        }
        for a in 0..dims {
            grad[i * dims + a] = 4.0 * (attractive[a] - repulsive[i * dims + a] / z);
        }
    }
    grad
}

/// Lays out the points whose neighbours are `nn` (from [`neighbour_count`] neighbours) in
/// `dims` (2 or 3) dimensions, starting from `init` ([n, dims], PCA coordinates).
pub fn tsne(nn: &Neighbours, init: &[f32], dims: usize, work: &Work) -> Result<Vec<f32>> {
    if !(2..=3).contains(&dims) {
        return Err(EngineError::Projection(format!(
            "t-SNE lays out in 2 or 3 dimensions, not {dims}"
        )));
    }
    let n = init.len() / dims;
    if n < 3 {
        return Err(EngineError::Projection(format!(
            "t-SNE needs at least 3 points, got {n}"
        )));
    }
    let p = affinities(nn);
    let mut y: Vec<f64> = init.iter().map(|&v| v as f64).collect();
    let first: Vec<f64> = (0..n).map(|i| y[i * dims]).collect();
    let mean = first.iter().sum::<f64>() / n as f64;
    let std = (first.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let scale = if std > 0.0 { 1e-4 / std } else { 1.0 };
    y.iter_mut().for_each(|v| *v *= scale);

    let learning_rate = (n as f64 / EARLY_EXAGGERATION / 4.0).max(50.0);
    let mut update = vec![0.0f64; n * dims];
    let mut gains = vec![1.0f64; n * dims];
    for iteration in 0..ITERATIONS {
        if work.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let exploring = iteration < EXPLORATION_ITERATIONS;
        let (momentum, exaggeration) = if exploring {
            (0.5, EARLY_EXAGGERATION)
        } else {
            (0.8, 1.0)
        };
        let grad = gradient(&p, &y, dims, exaggeration);
        for ((g, (u, gain)), v) in grad
            .iter()
            .zip(update.iter_mut().zip(gains.iter_mut()))
            .zip(y.iter_mut())
        {
            *gain = if *u * g < 0.0 {
                *gain + 0.2
            } else {
                *gain * 0.8
            };
            *gain = gain.max(MIN_GAIN);
            *u = momentum * *u - learning_rate * g * *gain;
            *v += *u;
        }
        work.report((iteration + 1) as f32 / ITERATIONS as f32);
        if (iteration + 1) % 50 == 0 && !exploring {
            let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
            if norm < MIN_GRAD_NORM {
                break;
            }
        }
    }
    Ok(y.into_iter().map(|v| v as f32).collect())
}
