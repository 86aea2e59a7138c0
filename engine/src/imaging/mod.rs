//! Images for vision models: decoding files, resampling as the reference libraries do, and the
//! Hugging Face preprocessing that turns a picture into a model's pixel values.

pub mod load;
pub mod preprocess;
pub mod resample;

pub use load::{RgbImage, decode_image, load_image};
pub use preprocess::{ImageProcessor, PreparedImage};
