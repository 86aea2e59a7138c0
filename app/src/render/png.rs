//! Writing rendered pictures (views, screenshots) as PNG files, atomically.

use anyhow::{Context, Result};
use headwise_engine::atomic_file::write_atomically;
use std::path::Path;

/// Writes a PNG atomically (temporary file, then rename).
pub fn save_png(image: &image::RgbaImage, path: &Path) -> Result<()> {
    write_atomically(
        path,
        |tmp| Ok(image.save_with_format(tmp, image::ImageFormat::Png)?),
        anyhow::Error::from,
    )
    .with_context(|| format!("writing {}", path.display()))
}
