//! What a gradient pass differentiates the target by, recorded as the pass runs.
//!
//! Each layer's attention is multiplied by a leaf of ones M [heads, T, T] before it weighs the
//! values, and each head's output by a gate ξ [heads, 1, 1] of ones before the output
//! projection. Neither changes the pass, and their gradients are exactly what is asked for:
//! ∂target/∂M = ∂target/∂A ⊙ A (the product of the attention and its gradient, Chefer et al.)
//! and ∂target/∂ξ_h is Michel et al.'s head importance before the absolute value. So one
//! backward pass through burn's autodiff gives both, with the model's weights left as plain
//! (untracked) tensors.

use burn::tensor::{Device, Tensor};
use std::sync::{Arc, Mutex, MutexGuard};

/// The leaves and outputs of one gradient pass; clones share them.
#[derive(Clone, Default)]
pub struct GradientTape {
    recorded: Arc<Mutex<Recorded>>,
}

#[derive(Default)]
struct Recorded {
    /// Only record each layer's input (the checkpoints of a layer-by-layer backward pass):
    /// no leaves, nothing tracked.
    checkpoints_only: bool,
    /// Each layer's input, by layer, when `checkpoints_only`.
    layer_inputs: Vec<Option<Tensor<2>>>,
    /// The stream after the last layer of a pass over some layers only.
    span_output: Option<Tensor<2>>,
    /// Per layer, in the order the pass runs them: (M, ξ).
    layers: Vec<(Tensor<3>, Tensor<3>)>,
    /// The input to the first layer, [T, hidden], as a constant.
    embedded: Option<Tensor<2>>,
    /// The last layer's output after any final norm, [T, hidden] (encoders and vision models).
    hidden: Option<Tensor<2>>,
    /// The output logits of the pass, [rows, classes]: the next-token logits of the last token
    /// (decoders) or the class logits (classifiers).
    logits: Option<Tensor<2>>,
}

impl std::fmt::Debug for GradientTape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GradientTape({} layers)", self.lock().layers.len())
    }
}

/// Two handles are equal when they share one tape.
impl PartialEq for GradientTape {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.recorded, &other.recorded)
    }
}

impl GradientTape {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A poisoned tape only means a pass panicked half-way; what it recorded is still whole.
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A tape that records only each layer's input, for the first pass of a layer-by-layer
    /// backward ([`GradientTape::layer_inputs`]); `attend` makes no leaves for it.
    pub fn checkpoints() -> Self {
        let tape = Self::default();
        tape.lock().checkpoints_only = true;
        tape
    }

    /// Whether `attend` gives each layer its leaves (not for a checkpoint pass).
    pub fn makes_leaves(&self) -> bool {
        !self.lock().checkpoints_only
    }

    /// Keeps layer `index`'s input when this is a checkpoint tape.
    pub fn record_layer_input(&self, index: usize, x: &Tensor<2>) {
        let mut recorded = self.lock();
        if recorded.checkpoints_only {
            if recorded.layer_inputs.len() <= index {
                recorded.layer_inputs.resize(index + 1, None);
            }
            recorded.layer_inputs[index] = Some(x.clone());
        }
    }

    /// Each layer's input, by layer, from a checkpoint pass.
    pub fn layer_inputs(&self) -> Vec<Option<Tensor<2>>> {
        self.lock().layer_inputs.clone()
    }

    pub fn record_span_output(&self, x: &Tensor<2>) {
        self.lock().span_output = Some(x.clone());
    }

    pub fn span_output(&self) -> Option<Tensor<2>> {
        self.lock().span_output.clone()
    }

    /// The next layer's leaves: the attention multiplier M [heads, t, t] and the head gate ξ
    /// [heads, 1, 1], both ones, tracked by autodiff on `device`.
    pub fn layer_leaves(&self, heads: usize, t: usize, device: &Device) -> (Tensor<3>, Tensor<3>) {
        let tracked = device.clone().autodiff();
        let multiplier = Tensor::<3>::ones([heads, t, t], &tracked).require_grad();
        let gate = Tensor::<3>::ones([heads, 1, 1], &tracked).require_grad();
        self.lock().layers.push((multiplier.clone(), gate.clone()));
        (multiplier, gate)
    }

    pub fn record_embedded(&self, x: &Tensor<2>) {
        self.lock().embedded = Some(x.clone());
    }

    pub fn record_hidden(&self, x: &Tensor<2>) {
        self.lock().hidden = Some(x.clone());
    }

    pub fn record_logits(&self, x: &Tensor<2>) {
        self.lock().logits = Some(x.clone());
    }

    pub fn layer_count(&self) -> usize {
        self.lock().layers.len()
    }

    /// Each layer's (M, ξ) leaves.
    pub fn leaves(&self) -> Vec<(Tensor<3>, Tensor<3>)> {
        self.lock().layers.clone()
    }

    pub fn embedded(&self) -> Option<Tensor<2>> {
        self.lock().embedded.clone()
    }

    pub fn hidden(&self) -> Option<Tensor<2>> {
        self.lock().hidden.clone()
    }

    pub fn logits(&self) -> Option<Tensor<2>> {
        self.lock().logits.clone()
    }
}
