//! Attention rollout on the compute device: the layer matrices of [`super::rollout`] (heads fused,
//! smallest weights discarded, identity added, rows normalised) built with tensor operations
//! where the attention lies, so that moving a slider recomputes them on the GPU when there is
//! one (burn's CPU backend otherwise), and a query's row as a chain of vector-matrix products.
//!
//! One difference from the host version, on exact ties only: the discard ratio zeroes every
//! weight at or below the k-th smallest, where the host zeroes exactly k in position order.

use super::rollout::{Fusion, RolloutSettings};
use crate::error::Result;
use crate::host::HostTensor;
use crate::model::to_vec;
use burn::tensor::{Device, Tensor, TensorData};
use std::borrow::Borrow;

/// One input's attention, every layer [heads, T, T], uploaded once.
pub struct DeviceLayers {
    layers: Vec<Tensor<3>>,
    t: usize,
    device: Device,
}

/// The rollout's layer matrices for one setting, [T, T] each, from `start_layer` on.
pub struct DeviceLayerMatrices {
    matrices: Vec<Tensor<2>>,
    t: usize,
    device: Device,
}

impl DeviceLayers {
    pub fn upload<L: Borrow<HostTensor>>(layers: &[L], device: &Device) -> Self {
        let layers: Vec<Tensor<3>> = layers
            .iter()
            .map(|l| {
                let l = l.borrow();
                Tensor::from_data(TensorData::new(l.data.to_vec(), l.shape.clone()), device)
            })
            .collect();
        let t = layers.first().map_or(0, |l| l.dims()[1]);
        Self {
            layers,
            t,
            device: device.clone(),
        }
    }

    /// The layer matrices for `settings`, computed on the device.
    pub fn matrices(&self, settings: &RolloutSettings) -> DeviceLayerMatrices {
        DeviceLayerMatrices {
            matrices: self
                .layers
                .iter()
                .skip(settings.start_layer)
                .map(|attn| layer_matrix(attn.clone(), settings, &self.device))
                .collect(),
            t: self.t,
            device: self.device.clone(),
        }
    }
}

impl DeviceLayerMatrices {
    /// Row `query` of the rollout: where token `query`'s representation after the last layer
    /// comes from. Read back to the host ([T]).
    pub fn row(&self, query: usize) -> Result<Vec<f32>> {
        let t = self.t;
        let mut one_hot = vec![0.0f32; t];
        if let Some(v) = one_hot.get_mut(query) {
            *v = 1.0;
        }
        let mut row = Tensor::<2>::from_data(TensorData::new(one_hot, vec![1, t]), &self.device);
        for m in self.matrices.iter().rev() {
            row = row.matmul(m.clone());
        }
        to_vec(row)
    }
}

// burn's `slice` takes one range per dimension: `[a..b]` is a 1-D slice, not a list of one range.
#[allow(clippy::single_range_in_vec_init)]
fn layer_matrix(attn: Tensor<3>, settings: &RolloutSettings, device: &Device) -> Tensor<2> {
    let [_, t, _] = attn.dims();
    let fused = match settings.fusion {
        Fusion::Mean => attn.mean_dim(0),
        Fusion::Min => attn.min_dim(0),
        Fusion::Max => attn.max_dim(0),
    }
    .reshape([t * t]);
    let size = t * t;
    let discard = (size as f64 * f64::from(settings.discard_ratio.clamp(0.0, 1.0))) as usize;
    let pruned = if discard > 0 {
        let threshold = fused.clone().sort(0).slice([discard - 1..discard]);
        let dropped = fused.clone().lower_equal(threshold.expand([size]));
        // The CLS → CLS weight is never discarded, as in vit-explain.
        let first = fused.clone().slice([0..1]);
        fused.mask_fill(dropped, 0.0).slice_assign([0..1], first)
    } else {
        fused
    };
    let with_residual = pruned.reshape([t, t]) + Tensor::<2>::eye(t, device);
    let sums = with_residual.clone().sum_dim(1);
    with_residual / sums
}
