//! Decoding an image file (PNG, JPEG, WebP) into 8-bit RGB, upright.

use crate::error::{EngineError, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use std::io::Cursor;
use std::path::Path;

/// The most pixels a picture may declare: 134 megapixels (a 16384 × 8192 panorama), about
/// 400 MB as 8-bit RGB. Vision models see a few hundred pixels a side; a larger file is
/// damaged or not meant for them.
pub const MAX_PICTURE_PIXELS: u64 = 1 << 27;
/// The longest side a picture may declare.
pub const MAX_PICTURE_SIDE: u32 = 1 << 16;
/// The most a decoder may allocate for one picture (16-bit RGBA of the largest picture fits).
const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Whether a JPEG's last scan is followed by its end-of-image marker (FF D9). The JPEG decoder
/// fills a cut-off scan with grey without a word, so a truncated download would otherwise pass
/// as a picture. Inside entropy-coded data every FF is followed by 00 or a restart marker, so
/// FF D9 after the last start-of-scan (FF DA) is the real end; an EXIF thumbnail's own markers
/// come before the main picture's scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(last_scan) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[last_scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

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
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    if reader.format().is_none() {
        return Err(bad("not an image (expected PNG, JPEG or WebP)".into()));
    }
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(bad(
            "truncated JPEG: no end-of-image marker after the picture's data".into(),
        ));
    }
    // No limits while the header is read, so that an oversized picture is reported with its
    // size below; the decoder gets them before it decodes.
    reader.no_limits();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| bad(format!("cannot decode: {e}")))?;
    // The header's size is checked before a pixel is decoded: a 350-byte file may declare
    // 100000 × 100000 pixels, and some decoders allocate for them whatever the limits say.
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if width > MAX_PICTURE_SIDE
        || height > MAX_PICTURE_SIDE
        || pixels > MAX_PICTURE_PIXELS
        || decoder.total_bytes() > MAX_DECODE_BYTES
    {
        return Err(bad(format!(
            "the picture declares {width} × {height} pixels; pictures up to \
             {MAX_PICTURE_PIXELS} pixels and {MAX_PICTURE_SIDE} pixels a side are read"
        )));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE);
    limits.max_image_height = Some(MAX_PICTURE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder
        .set_limits(limits)
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
