//! How one layer's attention logits follow from its captured `q` and `k` (DESIGN.md, "Models"):
//! `z = softcap(scale · q·kᵀ) + mask`, with `softcap_c(x) = c·tanh(x/c)` and the mask hiding
//! future keys (decoders), padding, and keys outside the layer's sliding window. Stored per layer
//! in the session (`model.attention`), so that views and metrics never assume 1/sqrt(d).

use serde::{Deserialize, Serialize};

/// One layer's attention definition, as written to a session's `model.attention`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerAttention {
    /// Multiplies q·k before any soft-cap: 1/sqrt(d) unless the model says otherwise.
    pub scale: f32,
    /// Attention-logit soft-capping (Gemma 2): `c·tanh(x/c)`; None when the layer has none.
    pub softcap: Option<f32>,
    /// How many keys back a query may see, itself included, as transformers counts it: key j is
    /// visible to query i only when |i − j| < window. None: no sliding window.
    pub window: Option<usize>,
    /// Whether q and k were rotated by RoPE before the dot product.
    pub rope: bool,
}

impl LayerAttention {
    /// Plain scaled dot-product attention over heads of `head_dim`: 1/sqrt(d), no soft-cap, no
    /// window.
    pub fn standard(head_dim: usize, rope: bool) -> Self {
        Self {
            scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            softcap: None,
            window: None,
            rope,
        }
    }

    /// The logit of one query-key pair before the mask: `softcap(scale · dot)`.
    pub fn logit(&self, dot: f32) -> f32 {
        let z = self.scale * dot;
        match self.softcap {
            Some(c) => c * (z / c).tanh(),
            None => z,
        }
    }

    /// Whether the sliding window (if any) lets query `query` see key `key`.
    pub fn in_window(&self, query: usize, key: usize) -> bool {
        self.window.is_none_or(|w| query.abs_diff(key) < w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_of_three_sees_the_query_and_the_two_keys_before_it() {
        let a = LayerAttention {
            window: Some(3),
            ..LayerAttention::standard(4, true)
        };
        let seen: Vec<usize> = (0..8).filter(|&k| a.in_window(5, k)).collect();
        assert_eq!(seen, vec![3, 4, 5, 6, 7]);
        assert!(LayerAttention::standard(4, true).in_window(100, 0));
    }

    #[test]
    fn logits_are_scaled_then_soft_capped() {
        let plain = LayerAttention::standard(16, false);
        assert_eq!(plain.logit(8.0), 2.0);
        let capped = LayerAttention {
            softcap: Some(5.0),
            ..plain
        };
        assert!((capped.logit(8.0) - 5.0 * (2.0f32 / 5.0).tanh()).abs() < 1e-6);
        assert!(capped.logit(1e6) <= 5.0);
    }

    #[test]
    fn the_session_json_has_the_design_field_names() {
        let json = serde_json::to_value(LayerAttention {
            scale: 0.25,
            softcap: None,
            window: Some(4),
            rope: true,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"scale": 0.25, "softcap": null, "window": 4, "rope": true})
        );
    }
}
