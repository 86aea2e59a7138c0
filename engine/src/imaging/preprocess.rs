//! Hugging Face's image preprocessing, read from `preprocessor_config.json`: resize (to a fixed
//! size or by the shortest edge), centre crop, rescale, normalise. The arithmetic follows the
//! Pillow-backed processors (`ViTImageProcessorPil`, `BitImageProcessorPil`,
//! `CLIPImageProcessorPil`, `SiglipImageProcessorPil` …) step for step, with each class's
//! defaults for the keys a config leaves out; a step or processor class it does not implement is
//! refused by name.

use super::load::RgbImage;
use super::resample::{Filter, resize_u8};
use crate::error::{EngineError, Result};
use serde_json::Value;
use std::path::Path;

/// The largest side a preprocessor config may resize or crop to (vision models take a few
/// hundred pixels a side).
pub const MAX_PREPARED_SIDE: usize = 1 << 14;
/// The most pixels a picture may have after the resize step (4096 × 4096).
pub const MAX_PREPARED_PIXELS: usize = 1 << 24;

#[derive(Debug, Clone, PartialEq)]
pub enum ResizeTo {
    /// `{"height": h, "width": w}`
    Exact { height: usize, width: usize },
    /// `{"shortest_edge": s}`, optionally capped by `longest_edge`.
    ShortestEdge {
        shortest: usize,
        longest: Option<usize>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub resize: Option<(ResizeTo, Filter)>,
    /// [height, width]
    pub crop: Option<[usize; 2]>,
    pub rescale: Option<f64>,
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// A picture as the model sees it: the resized and cropped image (kept in sessions, drawn under
/// the patch heatmaps) and its normalised pixel values, channels first.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    pub view: RgbImage,
    pub pixels: Vec<f32>,
}

/// `size` as transformers' `get_size_dict` reads it: a bare number is a square, or (for the
/// classes that do not default to square, CLIP's and Bit's) the shortest edge.
fn size_of(v: &Value, default_to_square: bool) -> Option<ResizeTo> {
    if let Some(n) = v.as_u64() {
        let n = n as usize;
        return Some(if default_to_square {
            ResizeTo::Exact {
                height: n,
                width: n,
            }
        } else {
            ResizeTo::ShortestEdge {
                shortest: n,
                longest: None,
            }
        });
    }
    let get = |k: &str| v.get(k).and_then(Value::as_u64).map(|n| n as usize);
    if let (Some(height), Some(width)) = (get("height"), get("width")) {
        return Some(ResizeTo::Exact { height, width });
    }
    get("shortest_edge").map(|shortest| ResizeTo::ShortestEdge {
        shortest,
        longest: get("longest_edge"),
    })
}

fn triple(v: Option<&Value>, default: [f32; 3]) -> Option<[f32; 3]> {
    match v {
        None | Some(Value::Null) => Some(default),
        Some(Value::Number(n)) => Some([n.as_f64()? as f32; 3]),
        Some(Value::Array(a)) if a.len() == 3 => Some([
            a[0].as_f64()? as f32,
            a[1].as_f64()? as f32,
            a[2].as_f64()? as f32,
        ]),
        _ => None,
    }
}

/// What an image processor class assumes for the keys its config leaves out (its class
/// attributes in transformers).
struct ClassDefaults {
    size: Option<Value>,
    resample: u64,
    center_crop: bool,
    crop_size: Option<Value>,
    mean: [f32; 3],
    std: [f32; 3],
    default_to_square: bool,
}

const HALF: [f32; 3] = [0.5; 3];
const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The processor classes whose steps this module implements (with or without transformers'
/// `Fast`/`Pil` backend suffix; the arithmetic is always the Pillow backend's).
const PROCESSOR_CLASSES: &[&str] = &[
    "ViTImageProcessor",
    "DeiTImageProcessor",
    "BitImageProcessor",
    "CLIPImageProcessor",
    "SiglipImageProcessor",
];

fn class_defaults(kind: Option<&str>) -> std::result::Result<ClassDefaults, String> {
    let square = |n: u64| Some(serde_json::json!({"height": n, "width": n}));
    let base = ClassDefaults {
        size: None,
        resample: 2,
        center_crop: false,
        crop_size: None,
        mean: HALF,
        std: HALF,
        default_to_square: true,
    };
    let Some(kind) = kind else {
        return Ok(base);
    };
    let class = kind
        .strip_suffix("Fast")
        .or_else(|| kind.strip_suffix("Pil"))
        .unwrap_or(kind)
        .replace("FeatureExtractor", "ImageProcessor");
    Ok(match class.as_str() {
        "ViTImageProcessor" => ClassDefaults {
            size: square(224),
            ..base
        },
        "DeiTImageProcessor" => ClassDefaults {
            size: square(256),
            resample: 3,
            center_crop: true,
            crop_size: square(224),
            ..base
        },
        "BitImageProcessor" | "CLIPImageProcessor" => ClassDefaults {
            size: Some(serde_json::json!({"shortest_edge": 224})),
            resample: 3,
            center_crop: true,
            crop_size: square(224),
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
            default_to_square: false,
        },
        "SiglipImageProcessor" => ClassDefaults {
            size: square(224),
            resample: 3,
            default_to_square: false,
            ..base
        },
        _ => {
            return Err(format!(
                "image processor '{kind}' is not supported; supported: {}",
                PROCESSOR_CLASSES.join(", ")
            ));
        }
    })
}

/// Steps of transformers' image processors that change the pixels and are not implemented here:
/// refused when a config turns them on.
const UNSUPPORTED_STEPS: &[&str] = &[
    "do_pad",
    "pad_size",
    "crop_pct",
    "size_divisor",
    "size_divisibility",
    "do_flip_channel_order",
    "use_square_size",
    "do_convert_grayscale",
];

impl ImageProcessor {
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| EngineError::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_json(&json, path)
    }

    /// Reads a preprocessor config; `path` is only for messages.
    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let bad = |reason: String| EngineError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let given = |k: &str| json.get(k).filter(|v| !v.is_null());
        let kind = given("image_processor_type")
            .or_else(|| given("feature_extractor_type"))
            .and_then(Value::as_str);
        let defaults = class_defaults(kind).map_err(|reason| {
            let key = if given("image_processor_type").is_some() {
                "image_processor_type"
            } else {
                "feature_extractor_type"
            };
            bad(format!("{key}: {reason}"))
        })?;
        for key in UNSUPPORTED_STEPS {
            let on = match given(key) {
                None | Some(Value::Bool(false)) => false,
                Some(_) => true,
            };
            if on {
                return Err(bad(format!(
                    "{key} {} is not supported (headwise resizes, centre-crops, rescales and \
                     normalises only)",
                    json[*key]
                )));
            }
        }
        let flag = |k: &str| given(k).and_then(Value::as_bool).unwrap_or(true);
        let default_to_square = given("default_to_square")
            .and_then(Value::as_bool)
            .unwrap_or(defaults.default_to_square);
        let resize = if flag("do_resize") {
            let size = given("size")
                .or(defaults.size.as_ref())
                .ok_or_else(|| bad("do_resize without a size".into()))?;
            let size = size_of(size, default_to_square).ok_or_else(|| {
                bad(format!(
                    "size {size} is not supported; supported: a number, {{\"height\", \
                     \"width\"}} or {{\"shortest_edge\"[, \"longest_edge\"]}}"
                ))
            })?;
            let code = given("resample")
                .and_then(Value::as_u64)
                .unwrap_or(defaults.resample);
            let filter = Filter::from_pil(code)
                .ok_or_else(|| bad(format!("unknown resample filter {code}")))?;
            Some((size, filter))
        } else {
            None
        };
        let center_crop = given("do_center_crop")
            .and_then(Value::as_bool)
            .unwrap_or(defaults.center_crop);
        let crop = if center_crop {
            match given("crop_size")
                .or(defaults.crop_size.as_ref())
                .and_then(|v| size_of(v, true))
            {
                Some(ResizeTo::Exact { height, width }) => Some([height, width]),
                _ => return Err(bad("do_center_crop without a crop_size".into())),
            }
        } else {
            None
        };
        let rescale = if flag("do_rescale") {
            Some(
                json.get("rescale_factor")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0 / 255.0),
            )
        } else {
            None
        };
        let normalize = if flag("do_normalize") {
            let mean = triple(json.get("image_mean"), defaults.mean)
                .ok_or_else(|| bad("image_mean must be a number or three numbers".into()))?;
            let std = triple(json.get("image_std"), defaults.std)
                .ok_or_else(|| bad("image_std must be a number or three numbers".into()))?;
            Some((mean, std))
        } else {
            None
        };
        // Sizes are bounded here, before any picture is resized to them: a crop_size of
        // 100000 would ask for 30 GB.
        let side = |key: &str, v: usize| -> Result<()> {
            if v == 0 || v > MAX_PREPARED_SIDE {
                return Err(bad(format!(
                    "{key} {} asks for {v} pixels a side; supported: 1 to {MAX_PREPARED_SIDE}",
                    json.get(key).unwrap_or(&Value::Null)
                )));
            }
            Ok(())
        };
        match &resize {
            Some((ResizeTo::Exact { height, width }, _)) => {
                side("size", *height)?;
                side("size", *width)?;
            }
            Some((ResizeTo::ShortestEdge { shortest, longest }, _)) => {
                side("size", *shortest)?;
                if let Some(longest) = longest {
                    side("size", *longest)?;
                }
            }
            None => {}
        }
        if let Some([height, width]) = crop {
            side("crop_size", height)?;
            side("crop_size", width)?;
        }
        if let Some((mean, std)) = &normalize
            && (std.iter().any(|s| *s == 0.0 || !s.is_finite())
                || mean.iter().any(|m| !m.is_finite()))
        {
            return Err(bad(format!(
                "image_mean {mean:?} / image_std {std:?}: normalising divides by each std, which \
                 must be finite and not 0"
            )));
        }
        if let Some(factor) = rescale
            && !factor.is_finite()
        {
            return Err(bad(format!(
                "rescale_factor {factor} is not a finite number"
            )));
        }
        Ok(Self {
            resize,
            crop,
            rescale,
            normalize,
        })
    }

    /// Checks that preparing a `width` × `height` picture stays within bounds: the resize step
    /// of an extreme aspect ratio (1 × 100000, its short side scaled to 224) would otherwise
    /// make a picture of billions of pixels before the crop.
    pub fn check_size(&self, width: usize, height: usize) -> std::result::Result<(), String> {
        if let Some((to, _)) = &self.resize {
            let (h, w) = Self::resized_size(to, height, width);
            if h.checked_mul(w).is_none_or(|n| n > MAX_PREPARED_PIXELS) {
                return Err(format!(
                    "a {width} × {height} picture would be resized to {w} × {h} pixels, over the \
                     {MAX_PREPARED_PIXELS} this prepares (its aspect ratio is too extreme)"
                ));
            }
        } else if width.saturating_mul(height) > MAX_PREPARED_PIXELS {
            return Err(format!(
                "a {width} × {height} picture is over the {MAX_PREPARED_PIXELS} pixels this \
                 prepares without resizing"
            ));
        }
        Ok(())
    }

    /// The preprocessor_config.json Hugging Face ships with a model type, for a graph that came
    /// without one: DINOv2 and DeiT resize the short side to 256 (bicubic) and crop 224 with
    /// ImageNet's statistics (facebook/dinov2-small's BitImageProcessor); ViT resizes to
    /// 224 × 224 (bilinear) around 0.5.
    pub fn default_config_for(model_type: &str) -> Value {
        if model_type == "vit" {
            return serde_json::json!({
                "image_processor_type": "ViTImageProcessor",
                "do_resize": true, "size": {"height": 224, "width": 224}, "resample": 2,
                "do_rescale": true, "rescale_factor": 1.0 / 255.0,
                "do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            });
        }
        serde_json::json!({
            "image_processor_type": "BitImageProcessor",
            "do_convert_rgb": true,
            "do_resize": true, "size": {"shortest_edge": 256}, "resample": 3,
            "do_center_crop": true, "crop_size": {"height": 224, "width": 224},
            "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        })
    }

    pub fn default_for(model_type: &str) -> Self {
        Self::from_json(&Self::default_config_for(model_type), Path::new(model_type))
            .unwrap_or_else(|_| unreachable!("the built-in configs parse"))
    }

    /// The (height, width) a resize step produces for a picture of this size.
    fn resized_size(to: &ResizeTo, height: usize, width: usize) -> (usize, usize) {
        match *to {
            ResizeTo::Exact { height, width } => (height, width),
            ResizeTo::ShortestEdge { shortest, longest } => {
                let (short, long) = (height.min(width) as f64, height.max(width) as f64);
                let (mut size, mut raw) = (shortest as f64, None);
                if let Some(max) = longest
                    && long / short * size > max as f64
                {
                    let r = max as f64 * short / long;
                    raw = Some(r);
                    size = r.round();
                }
                if (height <= width && height as f64 == size)
                    || (width <= height && width as f64 == size)
                {
                    return (height, width);
                }
                let scaled = |num: usize, den: usize| {
                    (raw.unwrap_or(size) * num as f64 / den as f64) as usize
                };
                if width < height {
                    (scaled(height, width), size as usize)
                } else {
                    (size as usize, scaled(width, height))
                }
            }
        }
    }

    pub fn prepare(&self, image: &RgbImage) -> PreparedImage {
        let mut view = image.clone();
        if let Some((to, filter)) = &self.resize {
            let (height, width) = Self::resized_size(to, view.height, view.width);
            let (height, width) = (height.max(1), width.max(1));
            let pixels = resize_u8(
                &view.pixels,
                [view.width, view.height],
                3,
                [width, height],
                *filter,
            );
            view = RgbImage::new(width, height, pixels);
        }
        if let Some(crop) = self.crop {
            view = center_crop(&view, crop);
        }
        let plane = view.width * view.height;
        let mut pixels = vec![0.0f32; 3 * plane];
        for (i, rgb) in view.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                // Rescaling happens in f64 and is stored as f32, normalising in f32 (numpy's
                // dtypes in the reference).
                let mut v = match self.rescale {
                    Some(factor) => (f64::from(rgb[c]) * factor) as f32,
                    None => f32::from(rgb[c]),
                };
                if let Some((mean, std)) = &self.normalize {
                    v = (v - mean[c]) / std[c];
                }
                pixels[c * plane + i] = v;
            }
        }
        PreparedImage { view, pixels }
    }
}

/// The centre `[height, width]` of a picture, zero-padded where the picture is smaller, with the
/// offsets Hugging Face's `center_crop` uses.
fn center_crop(image: &RgbImage, [height, width]: [usize; 2]) -> RgbImage {
    let (h, w) = (image.height as i64, image.width as i64);
    let (ch, cw) = (height as i64, width as i64);
    // Padding (when the crop is larger) centres the picture, rounding the top/left pad up;
    // cropping takes floor((size - crop) / 2) of what results.
    let (pad_top, pad_left) = (((ch - h).max(0) + 1) / 2, ((cw - w).max(0) + 1) / 2);
    let (ph, pw) = (h.max(ch), w.max(cw));
    let (top, left) = ((ph - ch).div_euclid(2), (pw - cw).div_euclid(2));
    let mut pixels = vec![0u8; height * width * 3];
    for y in 0..ch {
        let sy = y + top - pad_top;
        if !(0..h).contains(&sy) {
            continue;
        }
        for x in 0..cw {
            let sx = x + left - pad_left;
            if !(0..w).contains(&sx) {
                continue;
            }
            let from = ((sy * w + sx) * 3) as usize;
            let to = ((y * cw + x) * 3) as usize;
            pixels[to..to + 3].copy_from_slice(&image.pixels[from..from + 3]);
        }
    }
    RgbImage::new(width, height, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_resize_keeps_the_aspect_ratio_rounding_down() {
        let to = ResizeTo::ShortestEdge {
            shortest: 256,
            longest: None,
        };
        assert_eq!(ImageProcessor::resized_size(&to, 300, 451), (256, 384));
        assert_eq!(ImageProcessor::resized_size(&to, 451, 300), (384, 256));
        assert_eq!(ImageProcessor::resized_size(&to, 256, 999), (256, 999));
    }

    #[test]
    fn the_built_in_preprocessing_of_every_vision_type_parses() {
        for model_type in ["vit", "deit", "dinov2", "dinov2_with_registers"] {
            let config = ImageProcessor::default_config_for(model_type);
            assert!(ImageProcessor::from_json(&config, Path::new(model_type)).is_ok());
        }
    }

    #[test]
    fn center_crop_takes_the_middle_and_pads_when_smaller() {
        let image = RgbImage::new(4, 3, (0..36).collect());
        let crop = center_crop(&image, [1, 2]);
        // Row 1, columns 1..3.
        assert_eq!(crop.pixels, vec![15, 16, 17, 18, 19, 20]);
        let padded = center_crop(&image, [5, 4]);
        assert_eq!(&padded.pixels[..12], &[0; 12]);
        assert_eq!(&padded.pixels[12..24], &image.pixels[..12]);
    }
}
