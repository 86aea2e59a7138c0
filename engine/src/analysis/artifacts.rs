//! Artifact tokens (Darcet et al., "Vision Transformers Need Registers"): patches whose hidden
//! state has a far larger norm than the rest, which ViTs without registers use as scratch space
//! and which then take a large share of the CLS token's attention.

use crate::host::HostTensor;

/// A patch is high-norm when its norm exceeds this multiple of the layer's median patch norm.
pub const OUTLIER_FACTOR: f32 = 2.0;

/// One layer's view of its patches' norms and of where the CLS token's attention goes.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerArtifacts {
    pub median_norm: f32,
    pub max_norm: f32,
    /// Token indices of the high-norm patches, largest norm first.
    pub outliers: Vec<usize>,
    /// The CLS token's attention (mean over heads) taken by its top 1% of patches (at least one).
    pub top_share: f32,
    /// The CLS token's attention (mean over heads) taken by the high-norm patches.
    pub outlier_share: f32,
}

fn median(values: &[f32]) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `norms` [T] after the layer, `attn` [heads, T, T] of the layer, `prefix` tokens before the
/// patches (CLS first).
pub fn layer_artifacts(norms: &[f32], attn: &HostTensor, prefix: usize) -> LayerArtifacts {
    let t = attn.shape[1];
    let patches = &norms[prefix.min(norms.len())..];
    let median_norm = median(patches);
    let max_norm = patches.iter().copied().fold(0.0, f32::max);
    let mut outliers: Vec<usize> = (0..patches.len())
        .filter(|&i| patches[i] > OUTLIER_FACTOR * median_norm)
        .map(|i| i + prefix)
        .collect();
    outliers.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]));
    // The CLS row averaged over heads.
    let heads = attn.data.len() / (t * t).max(1);
    let mut cls = vec![0.0f32; t];
    for h in 0..heads {
        for (c, v) in cls.iter_mut().zip(&attn.data[h * t * t..h * t * t + t]) {
            *c += v / heads as f32;
        }
    }
    let mut to_patches: Vec<f32> = cls[prefix.min(t)..].to_vec();
    to_patches.sort_by(|a, b| b.total_cmp(a));
    let top = (to_patches.len() / 100).max(1);
    LayerArtifacts {
        median_norm,
        max_norm,
        top_share: to_patches.iter().take(top).fold(0.0, |a, b| a + b),
        outlier_share: outliers.iter().fold(0.0, |a, &i| a + cls[i]),
        outliers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_with_a_huge_norm_is_an_outlier_and_its_cls_share_is_measured() {
        // CLS, then four patches; patch 3 (token 4) has ten times the others' norm.
        let norms = [5.0, 1.0, 1.2, 0.9, 12.0];
        let t = 5;
        let mut data = vec![0.0f32; 2 * t * t];
        // Both heads: CLS gives 0.7 to token 4 and 0.1 to each of tokens 0, 1, 2.
        for h in 0..2 {
            let row = &mut data[h * t * t..h * t * t + t];
            row.copy_from_slice(&[0.1, 0.1, 0.1, 0.0, 0.7]);
        }
        let attn = HostTensor::new(vec![2, t, t], data);
        let a = layer_artifacts(&norms, &attn, 1);
        assert_eq!(a.outliers, vec![4]);
        assert!((a.median_norm - 1.1).abs() < 1e-6);
        assert_eq!(a.max_norm, 12.0);
        assert!((a.outlier_share - 0.7).abs() < 1e-6);
        assert!(
            (a.top_share - 0.7).abs() < 1e-6,
            "the top patch is the outlier"
        );
    }

    #[test]
    fn even_norms_have_no_outliers() {
        let norms = [3.0, 1.0, 1.1, 1.2, 1.3];
        let attn = HostTensor::new(vec![1, 5, 5], vec![0.2; 25]);
        let a = layer_artifacts(&norms, &attn, 1);
        assert!(a.outliers.is_empty());
        assert_eq!(a.outlier_share, 0.0);
    }
}
