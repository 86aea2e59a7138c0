//! Principal component analysis of a batch of point clouds, on the device.
//!
//! The heavy parts, centring, the [d, d] covariance of n points and the projection onto the
//! leading components, are batched matrix products on the device; only the tiny symmetric
//! eigenproblem (d is a head's dimension, 32 to 128) is solved on the host.
//!
//! Signs follow scikit-learn: each component is flipped so its largest loading is positive.

use crate::error::{EngineError, Result};
use crate::model::to_vec;
use burn::tensor::{Tensor, TensorData};

/// The leading `dims` principal coordinates of each cloud in `points` ([batch, n, d]):
/// one row-major [n, dims] array per cloud.
pub fn pca(points: Tensor<3>, dims: usize) -> Result<Vec<Vec<f32>>> {
    let [batch, n, d] = points.dims();
    if dims == 0 || dims > d {
        return Err(EngineError::Projection(format!(
            "{dims} components asked of {d}-dimensional vectors"
        )));
    }
    if n < 2 {
        return Err(EngineError::Projection(format!(
            "PCA needs at least 2 points, got {n}"
        )));
    }
    let device = points.device();
    let centred = points.clone() - points.mean_dim(1);
    let covariance = centred.clone().swap_dims(1, 2).matmul(centred.clone()) / (n - 1) as f32;
    let covariance = to_vec(covariance)?;
    let mut components = Vec::with_capacity(batch * d * dims);
    for cov in covariance.chunks_exact(d * d) {
        let cov: Vec<f64> = cov.iter().map(|&v| v as f64).collect();
        let (values, vectors) = symmetric_eigen(&cov, d);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        // [d, dims]: column c is component c.
        let mut block = vec![0.0f32; d * dims];
        for (c, &e) in order.iter().take(dims).enumerate() {
            let column: Vec<f64> = (0..d).map(|r| vectors[r * d + e]).collect();
            let largest = column
                .iter()
                .copied()
                .fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
            let sign = if largest < 0.0 { -1.0 } else { 1.0 };
            for r in 0..d {
                block[r * dims + c] = (sign * column[r]) as f32;
            }
        }
        components.extend(block);
    }
    let components =
        Tensor::<3>::from_data(TensorData::new(components, vec![batch, d, dims]), &device);
    let projected = to_vec(centred.matmul(components))?;
    Ok(projected
        .chunks_exact(n * dims)
        .map(<[f32]>::to_vec)
        .collect())
}

/// Eigenvalues and eigenvectors (columns of the returned row-major [n, n] matrix) of a
/// symmetric matrix, by cyclic Jacobi rotations: exact to rounding and plenty fast at n ≤ 256.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = matrix.to_vec();
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_a_known_spectrum() {
        // A = V diag(5, 2, -1) Vᵀ with V a rotation.
        let (c, s) = (0.6f64, 0.8f64);
        let v = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let d = [5.0, 2.0, -1.0];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| v[i * 3 + k] * d[k] * v[j * 3 + k]).sum();
            }
        }
        let (values, vectors) = symmetric_eigen(&a, 3);
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        for (got, want) in sorted.iter().zip(d) {
            assert!((got - want).abs() < 1e-12, "{sorted:?}");
        }
        // A v = λ v for every returned pair.
        for e in 0..3 {
            for i in 0..3 {
                let av: f64 = (0..3).map(|k| a[i * 3 + k] * vectors[k * 3 + e]).sum();
                assert!((av - values[e] * vectors[i * 3 + e]).abs() < 1e-12);
            }
        }
    }
}
