//! The renderer: owns the WGSL shaders (in shaders/), their GPU buffers, and the offscreen
//! path that draws the same views into PNG files.

pub mod colormap;
pub mod heatmap;
pub mod offscreen;
pub mod paint_callback;
pub mod png;
pub mod scatter;
pub mod uniform_slots;
