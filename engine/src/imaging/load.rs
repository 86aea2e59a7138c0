//! Decoding an image file (PNG, JPEG, WebP) into 8-bit RGB, upright.

use crate::error::{EngineError, Result};
use image::{DynamicImage, ImageDecoder, ImageReader};
use std::io::Cursor;
use std::path::Path;

/// An 8-bit RGB picture, rows top to bottom, pixels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Self {
        debug_assert_eq!(pixels.len(), width * height * 3);
        Self {
            width,
            height,
            pixels,
        }
    }
}

/// Reads an image file. Errors name the file and say whether it is not an image at all or a
/// damaged one.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    decode_image(&bytes, path)
}

/// Decodes an image held in memory; `path` is only for messages.
///
/// Grayscale is spread to three channels, alpha is dropped (as Pillow's `convert("RGB")` does),
/// 16-bit samples are scaled to 8 bits, and an EXIF orientation is applied so the picture is
/// upright (as `transformers.image_utils.load_image` does).
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let bad = |reason: String| EngineError::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    if reader.format().is_none() {
        return Err(bad("not an image (expected PNG, JPEG or WebP)".into()));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| bad(format!("cannot decode: {e}")))?;
    let orientation = decoder.orientation().ok();
    let mut picture = DynamicImage::from_decoder(decoder)
        .map_err(|e| bad(format!("truncated or corrupt image: {e}")))?;
    if let Some(orientation) = orientation {
        picture.apply_orientation(orientation);
    }
    let rgb = picture.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err(bad("the image is empty".into()));
    }
    Ok(RgbImage::new(width, height, rgb.into_raw()))
}
