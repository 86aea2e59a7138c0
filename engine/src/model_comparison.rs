//! Two models of the same shape on the same tokens (a base checkpoint and its fine-tune): the
//! second model's session appended to the first's, each of its inputs pointing at the first
//! model's input with the same tokens as its `base`. Every comparison an edited run gets (each
//! head's change, the head view's difference, the next-token KL) then compares the models.

use crate::error::{EngineError, Result};
use crate::session::Session;
use std::path::Path;

/// The per-input tensors of a session are named `{kind}/{input}/...`; corpus-wide ones
/// (`proj/...`, the query-key layouts) are not.
fn renamed(name: &str, from: usize, to: usize) -> Option<String> {
    let mut parts = name.split('/');
    let kind = parts.next()?;
    let input = parts.next()?;
    if kind == "proj" || input.parse::<usize>().ok()? != from {
        return None;
    }
    let rest: Vec<&str> = parts.collect();
    Some(if rest.is_empty() {
        format!("{kind}/{to}")
    } else {
        format!("{kind}/{to}/{}", rest.join("/"))
    })
}

impl Session {
    /// Appends every input of `other` (the runs of another model, read from `other_path`) after
    /// this session's, each with `base` = this session's input with the same token ids and
    /// `model` = the other model's source. Refused, by name, when the models differ in shape or
    /// in how their logits follow from q and k, or when an input's tokens match none here.
    pub fn append_runs_of(&mut self, other: Session, other_path: &Path) -> Result<()> {
        let bad = |reason: String| EngineError::BadSession {
            path: other_path.to_path_buf(),
            reason,
        };
        let (a, b) = (&self.meta.model, &other.meta.model);
        let shape = |m: &crate::session::ModelInfo| (m.layers, m.heads, m.kv_heads, m.head_dim);
        if shape(a) != shape(b) {
            return Err(bad(format!(
                "its model ({}: {} layers × {} heads, {} kv heads, head_dim {}) is not the \
                 shape of {} ({} × {}, {}, {})",
                b.source,
                b.layers,
                b.heads,
                b.kv_heads,
                b.head_dim,
                a.source,
                a.layers,
                a.heads,
                a.kv_heads,
                a.head_dim
            )));
        }
        if a.attention != b.attention {
            return Err(bad(format!(
                "its layers' attention (scale, soft-cap, window, RoPE) differs from {}'s",
                a.source
            )));
        }
        let first = self.meta.inputs.len();
        let mut bases = Vec::with_capacity(other.meta.inputs.len());
        for (i, info) in other.meta.inputs.iter().enumerate() {
            // An edited run of the other file stays compared with its own unedited run.
            if let Some(own) = info.base {
                bases.push(first + own);
                continue;
            }
            let base = self
                .meta
                .inputs
                .iter()
                .position(|mine| mine.token_ids == info.token_ids && mine.base.is_none())
                .ok_or_else(|| {
                    bad(format!(
                        "input {i} ({} tokens) has tokens that no unedited input of {} has",
                        info.token_ids.len(),
                        a.source
                    ))
                })?;
            bases.push(base);
        }
        let source = other.meta.model.source.clone();
        let Session {
            meta,
            layers,
            extras,
            ..
        } = other;
        for (i, ((mut info, layer), base)) in
            meta.inputs.into_iter().zip(layers).zip(bases).enumerate()
        {
            let to = first + i;
            info.base = Some(base);
            info.model = Some(source.clone());
            self.meta.inputs.push(info);
            self.layers.push(layer);
            for (name, tensor) in &extras {
                if let Some(new) = renamed(name, i, to) {
                    self.extras.insert(new, tensor.clone());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_input_tensors_are_renamed_and_corpus_wide_ones_are_not() {
        assert_eq!(renamed("vnorm/2/5", 2, 7).as_deref(), Some("vnorm/7/5"));
        assert_eq!(renamed("next/2", 2, 7).as_deref(), Some("next/7"));
        assert_eq!(renamed("vnorm/3/5", 2, 7), None);
        assert_eq!(renamed("proj/pca/2/1", 2, 7), None);
        assert_eq!(renamed("odd", 2, 7), None);
    }
}
