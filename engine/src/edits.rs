//! Edits on a forward pass (interventions): knock a head out, replace it by its mean, or scale
//! the attention every query of a head pays to one key. The strings are the command line's and
//! the session's (DESIGN.md, "Edits and runs"):
//! - `ablate:L.H`: head H of layer L contributes nothing: its attention output (the weighted
//!   values, before the output projection) is zero;
//! - `ablate-mean:L.H`: that output is replaced by its mean over the input's tokens;
//! - `scale:L.H:K=F`: every query's attention to key position K in that head is multiplied by F
//!   and the row renormalised, which is exactly adding ln F to logit(i, K); F = 0 blocks the key.
//!
//! L and H may be `*` for every layer or head.

use crate::error::{EngineError, Result};
use std::fmt;
use std::str::FromStr;

/// A layer or head: one, or every one (`*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    All,
    One(usize),
}

impl Pick {
    pub fn covers(self, index: usize) -> bool {
        match self {
            Pick::All => true,
            Pick::One(i) => i == index,
        }
    }

    fn parse(s: &str, what: &str, spec: &str) -> std::result::Result<Self, String> {
        if s == "*" {
            return Ok(Pick::All);
        }
        s.parse()
            .map(Pick::One)
            .map_err(|_| format!("edit '{spec}': '{s}' is not a {what} number or *"))
    }
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pick::All => write!(f, "*"),
            Pick::One(i) => write!(f, "{i}"),
        }
    }
}

/// One edit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Edit {
    Ablate {
        layer: Pick,
        head: Pick,
    },
    AblateMean {
        layer: Pick,
        head: Pick,
    },
    Scale {
        layer: Pick,
        head: Pick,
        key: usize,
        factor: f32,
    },
}

impl Edit {
    fn place(&self) -> (Pick, Pick) {
        match *self {
            Edit::Ablate { layer, head }
            | Edit::AblateMean { layer, head }
            | Edit::Scale { layer, head, .. } => (layer, head),
        }
    }

    /// An error naming the edit unless its layer, head and key exist in a model of `layers` ×
    /// `heads` and an input of `tokens` tokens.
    pub fn check(&self, layers: usize, heads: usize, tokens: usize) -> Result<()> {
        let (layer, head) = self.place();
        let bad = |reason: String| EngineError::BadEdit {
            edit: self.to_string(),
            reason,
        };
        if let Pick::One(l) = layer
            && l >= layers
        {
            return Err(bad(format!(
                "the model has {layers} layers (counted from 0)"
            )));
        }
        if let Pick::One(h) = head
            && h >= heads
        {
            return Err(bad(format!("the model has {heads} heads (counted from 0)")));
        }
        if let Edit::Scale { key, .. } = *self
            && key >= tokens
        {
            return Err(bad(format!(
                "the input has {tokens} tokens (counted from 0)"
            )));
        }
        Ok(())
    }
}

impl FromStr for Edit {
    type Err = String;

    fn from_str(spec: &str) -> std::result::Result<Self, String> {
        let usage = "ablate:L.H, ablate-mean:L.H or scale:L.H:K=F (L and H may be *)";
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| format!("edit '{spec}': expected {usage}"))?;
        let place = |s: &str| -> std::result::Result<(Pick, Pick), String> {
            let (l, h) = s
                .split_once('.')
                .ok_or_else(|| format!("edit '{spec}': expected LAYER.HEAD, e.g. 3.5 or *.*"))?;
            Ok((
                Pick::parse(l, "layer", spec)?,
                Pick::parse(h, "head", spec)?,
            ))
        };
        match kind {
            "ablate" => {
                let (layer, head) = place(rest)?;
                Ok(Edit::Ablate { layer, head })
            }
            "ablate-mean" => {
                let (layer, head) = place(rest)?;
                Ok(Edit::AblateMean { layer, head })
            }
            "scale" => {
                let (at, what) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("edit '{spec}': expected scale:L.H:K=F"))?;
                let (layer, head) = place(at)?;
                let (k, f) = what
                    .split_once('=')
                    .ok_or_else(|| format!("edit '{spec}': expected scale:L.H:K=F"))?;
                let key = k
                    .parse()
                    .map_err(|_| format!("edit '{spec}': '{k}' is not a token position"))?;
                let factor: f32 = f
                    .parse()
                    .map_err(|_| format!("edit '{spec}': '{f}' is not a number"))?;
                if !factor.is_finite() || factor < 0.0 {
                    return Err(format!(
                        "edit '{spec}': the factor must be a finite number ≥ 0 (0 blocks the key)"
                    ));
                }
                Ok(Edit::Scale {
                    layer,
                    head,
                    key,
                    factor,
                })
            }
            other => Err(format!("edit '{spec}': unknown edit '{other}' ({usage})")),
        }
    }
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Edit::Ablate { layer, head } => write!(f, "ablate:{layer}.{head}"),
            Edit::AblateMean { layer, head } => write!(f, "ablate-mean:{layer}.{head}"),
            Edit::Scale {
                layer,
                head,
                key,
                factor,
            } => write!(f, "scale:{layer}.{head}:{key}={factor}"),
        }
    }
}

/// What the edits do to one layer of a model with `heads` heads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LayerEdits {
    /// Per head: its attention output is zeroed.
    pub ablated: Vec<bool>,
    /// Per head: its attention output is replaced by its mean over the tokens.
    pub mean: Vec<bool>,
    /// (head, key, ln F): added to every query's logit of that key in that head.
    pub key_bias: Vec<(usize, usize, f32)>,
}

impl LayerEdits {
    /// What `edits` do to layer `layer`; None when they leave it alone.
    pub fn of(edits: &[Edit], layer: usize, heads: usize) -> Option<Self> {
        let mut out = Self {
            ablated: vec![false; heads],
            mean: vec![false; heads],
            key_bias: Vec::new(),
        };
        let mut touched = false;
        for edit in edits {
            let (l, h) = edit.place();
            if !l.covers(layer) {
                continue;
            }
            for head in (0..heads).filter(|&x| h.covers(x)) {
                touched = true;
                match *edit {
                    Edit::Ablate { .. } => out.ablated[head] = true,
                    Edit::AblateMean { .. } => out.mean[head] = true,
                    Edit::Scale { key, factor, .. } => {
                        out.key_bias.push((head, key, log_factor(factor)))
                    }
                }
            }
        }
        touched.then_some(out)
    }

    /// The bias the scale edits add to each head's logits of each key, [heads × T] row-major;
    /// None without scale edits.
    pub fn bias(&self, heads: usize, tokens: usize) -> Option<Vec<f32>> {
        if self.key_bias.is_empty() {
            return None;
        }
        let mut bias = vec![0.0f32; heads * tokens];
        for &(h, k, b) in &self.key_bias {
            if let Some(cell) = bias.get_mut(h * tokens + k) {
                // Two scales of one key multiply; a blocked key stays blocked.
                *cell = (*cell + b).max(f32::MIN);
            }
        }
        Some(bias)
    }
}

/// ln F, with F = 0 as the most negative logit transformers masks with, so that a row whose
/// every key is blocked still has a finite logsumexp.
pub fn log_factor(factor: f32) -> f32 {
    if factor > 0.0 { factor.ln() } else { f32::MIN }
}

/// Parses every edit string of a session or command line.
pub fn parse_all(specs: &[String]) -> std::result::Result<Vec<Edit>, String> {
    specs.iter().map(|s| s.parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_strings_parse_and_print_back() {
        for spec in [
            "ablate:3.5",
            "ablate-mean:*.2",
            "scale:*.*:0=0.5",
            "scale:1.*:2=0",
        ] {
            let edit: Edit = spec.parse().unwrap();
            assert_eq!(edit.to_string(), spec);
        }
        assert!("ablate:3".parse::<Edit>().is_err());
        assert!("scale:1.2:0=-1".parse::<Edit>().is_err());
        assert!("scale:1.2:x=1".parse::<Edit>().is_err());
        assert!("mute:1.2".parse::<Edit>().is_err());
    }

    #[test]
    fn a_layers_edits_pick_their_heads_and_turn_factors_into_logit_biases() {
        let edits: Vec<Edit> = ["ablate:1.2", "scale:*.*:0=0.5", "ablate-mean:0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let layer1 = LayerEdits::of(&edits, 1, 4).unwrap();
        assert_eq!(layer1.ablated, vec![false, false, true, false]);
        assert_eq!(layer1.mean, vec![false; 4]);
        let bias = layer1.bias(4, 3).unwrap();
        for h in 0..4 {
            assert!((bias[h * 3] - 0.5f32.ln()).abs() < 1e-7);
            assert_eq!(bias[h * 3 + 1], 0.0);
        }
        assert!(LayerEdits::of(&edits, 0, 4).unwrap().mean[1]);
        let only_ablate: Vec<Edit> = vec!["ablate:1.2".parse().unwrap()];
        assert!(LayerEdits::of(&only_ablate, 0, 4).is_none());
        assert!(
            "scale:9.0:0=1"
                .parse::<Edit>()
                .unwrap()
                .check(2, 4, 5)
                .is_err()
        );
        assert!(
            "scale:1.0:7=1"
                .parse::<Edit>()
                .unwrap()
                .check(2, 4, 5)
                .is_err()
        );
    }
}
