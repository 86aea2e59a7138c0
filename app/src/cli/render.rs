//! `headwise render`: draws a view of a session offscreen into a PNG, with the same view code and
//! shaders as the window.

use crate::document::Document;
use crate::gui::export::{draw_view, natural_size, save_png};
use crate::render::colormap::ColorMap;
use crate::render::offscreen::Offscreen;
use crate::views::image;
use crate::views::state::{PatchSource, Selection, Tab, ViewState};
use anyhow::{Context, Result, bail};
use clap::Args;
use eframe::egui;
use headwise_engine::device::shared_wgpu_setup;
use headwise_engine::session::Session;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct RenderArgs {
    /// The session file to draw.
    pub session: PathBuf,
    /// overview, head:L.H (layer L, head H), or image:L.H (that head's attention from CLS over
    /// the picture of an image input).
    #[arg(long, default_value = "overview")]
    pub view: String,
    #[arg(long)]
    pub out: PathBuf,
    /// Which input of the session.
    #[arg(long)]
    pub input: Option<usize>,
    /// Canvas size in points (default: what the view needs).
    #[arg(long)]
    pub width: Option<f32>,
    #[arg(long)]
    pub height: Option<f32>,
    /// Pixels per point (2 for print).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f32,
    /// viridis or greys (default: the session's view state, else viridis).
    #[arg(long)]
    pub colormap: Option<String>,
    /// Log colour scale.
    #[arg(long)]
    pub log: bool,
}

/// What `--view` names.
#[derive(Debug, PartialEq)]
pub enum ViewSpec {
    Overview,
    Head { layer: usize, head: usize },
    Image { layer: usize, head: usize },
}

/// `L.H` after a view's prefix.
fn layer_head(spec: &str, rest: &str, prefix: &str) -> Result<(usize, usize)> {
    let (l, h) = rest
        .split_once('.')
        .with_context(|| format!("--view {spec}: expected {prefix}LAYER.HEAD, e.g. {prefix}3.5"))?;
    let layer = l
        .parse()
        .with_context(|| format!("--view {spec}: '{l}' is not a layer number"))?;
    let head = h
        .parse()
        .with_context(|| format!("--view {spec}: '{h}' is not a head number"))?;
    Ok((layer, head))
}

pub fn parse_view(spec: &str) -> Result<ViewSpec> {
    if spec == "overview" {
        return Ok(ViewSpec::Overview);
    }
    if let Some(rest) = spec.strip_prefix("head:") {
        let (layer, head) = layer_head(spec, rest, "head:")?;
        return Ok(ViewSpec::Head { layer, head });
    }
    if let Some(rest) = spec.strip_prefix("image:") {
        let (layer, head) = layer_head(spec, rest, "image:")?;
        return Ok(ViewSpec::Image { layer, head });
    }
    if spec.starts_with("qk:") {
        bail!(
            "--view {spec}: this view is not in this version of headwise yet (overview, head:L.H \
             and image:L.H are)"
        );
    }
    bail!("--view {spec}: unknown view (overview, head:L.H or image:L.H)")
}

pub fn run(args: RenderArgs) -> Result<()> {
    let spec = parse_view(&args.view)?;
    let session = Session::open(&args.session)?;
    let doc = Arc::new(Document::new(session));
    let mut state = ViewState::from_json(&doc.session.meta.view);
    state.window = None;
    if let Some(input) = args.input {
        if input >= doc.inputs() {
            bail!(
                "--input {input}: {} has {} inputs",
                args.session.display(),
                doc.inputs()
            );
        }
        state.input = input;
    }
    match spec {
        ViewSpec::Overview => state.tab = Tab::Overview,
        ViewSpec::Head { layer, head } | ViewSpec::Image { layer, head } => {
            if layer >= doc.layers() || head >= doc.heads() {
                bail!(
                    "--view {}: {} has {} layers x {} heads (counted from 0)",
                    args.view,
                    args.session.display(),
                    doc.layers(),
                    doc.heads()
                );
            }
            state.layer = layer;
            state.head = head;
            if matches!(spec, ViewSpec::Image { .. }) {
                if !image::is_image(&doc, state.input) {
                    bail!(
                        "--view {}: input {} of {} is not an image",
                        args.view,
                        state.input,
                        args.session.display()
                    );
                }
                state.tab = Tab::Image;
                state.image.source = PatchSource::Head;
                state.image.query = 0;
            } else {
                state.tab = Tab::Head;
                state.selection = Selection::Head;
            }
        }
    }
    state.clamp_to(doc.inputs(), doc.layers(), doc.heads());
    if let Some(name) = &args.colormap {
        state.style.colormap = ColorMap::ALL
            .into_iter()
            .find(|m| m.label() == name)
            .with_context(|| format!("--colormap {name}: viridis or greys"))?;
    }
    if args.log {
        state.style.log_scale = true;
    }
    let setup = shared_wgpu_setup().context(
        "no wgpu adapter: rendering needs a GPU or a software Vulkan driver (Mesa lavapipe)",
    )?;
    let mut offscreen = Offscreen::new(setup.device, setup.queue, egui::Visuals::dark());
    let natural = natural_size(&doc, &state);
    let size = egui::vec2(
        args.width.unwrap_or(natural.x),
        args.height.unwrap_or(natural.y),
    );
    let image = offscreen.render(size, args.scale, |ui| draw_view(ui, &doc, &mut state))?;
    save_png(&image, &args.out)?;
    eprintln!(
        "wrote {} ({}x{})",
        args.out.display(),
        image.width(),
        image.height()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_names_parse_to_views() {
        assert_eq!(parse_view("overview").unwrap(), ViewSpec::Overview);
        assert_eq!(
            parse_view("head:3.5").unwrap(),
            ViewSpec::Head { layer: 3, head: 5 }
        );
        assert!(parse_view("head:3").is_err());
        assert!(parse_view("head:x.1").is_err());
        assert_eq!(
            parse_view("image:11.2").unwrap(),
            ViewSpec::Image { layer: 11, head: 2 }
        );
        assert!(
            parse_view("qk:1.1")
                .unwrap_err()
                .to_string()
                .contains("not in this version")
        );
    }
}
