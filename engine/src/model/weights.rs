//! Named weights from a model file, whatever its format, as f32 host tensors.

use crate::error::Result;
use crate::host::HostTensor;
use std::path::Path;

/// A file (or set of files) that holds a model's named weights.
///
/// Each format converts its own dtypes and layouts so that every architecture reads weights
/// under Hugging Face's names and shapes.
pub trait WeightSource: Send + Sync {
    /// The file the weights come from, for error messages.
    fn path(&self) -> &Path;
    fn contains(&self, name: &str) -> bool;
    fn tensor(&self, name: &str) -> Result<HostTensor>;

    /// The first of several candidate names that exists (checkpoints differ in their prefixes,
    /// e.g. `bert.` or `transformer.`), or an error naming all of them.
    fn first_of(&self, names: &[String]) -> Result<HostTensor> {
        for name in names {
            if self.contains(name) {
                return self.tensor(name);
            }
        }
        Err(crate::EngineError::Missing {
            path: self.path().to_path_buf(),
            what: format!("weight {}", names.join(" or ")),
        })
    }
}
