//! headwise's engine: loads transformer models, runs them on a burn device and captures every
//! layer's attention, queries and keys; reads and writes session files. No UI, no printing.

pub mod analysis;
pub mod atomic_file;
pub mod attention;
pub mod device;
pub mod device_buffer;
pub mod edits;
pub mod error;
pub mod fetch;
pub mod host;
pub mod imaging;
pub mod locate;
pub mod model;
pub mod model_comparison;
pub mod pipeline;
pub mod rebuild;
pub mod session;
pub mod tokenizer;
pub mod trace;

pub use attention::LayerAttention;
pub use error::{EngineError, Result};
pub use model::{LongInput, Model, PixelInput, TokenInput};
pub use trace::{AttentionCapture, LayerTrace, Trace};
