//! `headwise render`: draws a view of a session offscreen into a PNG, with the same view code and
//! shaders as the window.

use super::progress::fraction_bar;
use crate::document::Document;
use crate::gui::export::{draw_view, natural_size, save_png};
use crate::render::colormap::ColorMap;
use crate::render::offscreen::Offscreen;
use crate::views::image;
use crate::views::state::{PatchSource, Selection, Tab, ViewState};
use anyhow::{Context, Result, bail};
use clap::Args;
use eframe::egui;
use headwise_engine::analysis::projection::{Method, Work, project_session};
use headwise_engine::device::{DeviceChoice, create_device, shared_wgpu_setup};
use headwise_engine::session::Session;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct RenderArgs {
    /// The session file to draw.
    pub session: PathBuf,
    /// overview, head:L.H (layer L, head H), image:L.H (that head's attention from CLS over
    /// the picture of an image input), or qk:L.H (that head's queries and keys over the
    /// session's inputs, in one joint space).
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
    /// qk views: the layout (pca, umap or tsne); laid out now if the session lacks it.
    #[arg(long)]
    pub method: Option<Method>,
    /// qk views: 2 or 3 dimensions (default: the stored layout's, else 2).
    #[arg(long)]
    pub dims: Option<usize>,
}

/// What `--view` names.
#[derive(Debug, PartialEq)]
pub enum ViewSpec {
    Overview,
    Head { layer: usize, head: usize },
    Image { layer: usize, head: usize },
    Qk { layer: usize, head: usize },
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
    if let Some(rest) = spec.strip_prefix("qk:") {
        let (layer, head) = layer_head(spec, rest, "qk:")?;
        return Ok(ViewSpec::Qk { layer, head });
    }
    bail!("--view {spec}: unknown view (overview, head:L.H, image:L.H or qk:L.H)")
}

/// The layout a qk render draws: the one asked for, else one the session has for the head
/// (the view state's method first), else PCA in 2D.
fn chosen_layout(
    session: &Session,
    args: &RenderArgs,
    layer: usize,
    head: usize,
) -> (Method, usize) {
    let saved = ViewState::from_json(&session.meta.view).qk.method;
    let stored = |m: Method| session.projection(m, layer, head).map(|(dims, _)| dims);
    let method = args.method.unwrap_or_else(|| {
        std::iter::once(saved)
            .chain(Method::ALL)
            .find(|&m| stored(m).is_some())
            .unwrap_or(Method::Pca)
    });
    (method, args.dims.or_else(|| stored(method)).unwrap_or(2))
}

/// Makes sure the session holds the layout a qk render draws, laying it out if not.
fn lay_out(session: &mut Session, args: &RenderArgs, layer: usize, head: usize) -> Result<()> {
    let m = &session.meta.model;
    if layer >= m.layers || head >= m.heads {
        bail!(
            "--view {}: {} has {} layers x {} heads (counted from 0)",
            args.view,
            args.session.display(),
            m.layers,
            m.heads
        );
    }
    let (method, dims) = chosen_layout(session, args, layer, head);
    if !(2..=3).contains(&dims) {
        bail!("--dims {dims}: 2 or 3");
    }
    if session
        .projection(method, layer, head)
        .is_some_and(|(d, _)| d == dims)
    {
        return Ok(());
    }
    let seed = session
        .meta
        .projections
        .get(method.name())
        .map_or(0, |p| p.seed);
    let device = create_device(DeviceChoice::Auto)?;
    let bar = fraction_bar(format!("{} of head {layer}.{head}", method.label()));
    let progress = |f: f32| bar.set_position((f * 1000.0) as u64);
    let laid_out = project_session(
        session,
        method,
        dims,
        seed,
        &[(layer, head)],
        &device.device,
        &Work::new(&progress, None),
    );
    bar.finish_and_clear();
    laid_out.with_context(|| {
        format!(
            "laying out head {layer}.{head} of {}",
            args.session.display()
        )
    })?;
    Ok(())
}

pub fn run(args: RenderArgs) -> Result<()> {
    let spec = parse_view(&args.view)?;
    let mut session = Session::open(&args.session)?;
    if let ViewSpec::Qk { layer, head } = spec {
        lay_out(&mut session, &args, layer, head)?;
    }
    let doc = Arc::new(Document::new(session));
    // A picture is drawn once: it waits for the metrics the window would fill in later.
    doc.wait_for_metrics();
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
        ViewSpec::Head { layer, head }
        | ViewSpec::Image { layer, head }
        | ViewSpec::Qk { layer, head } => {
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
            } else if matches!(spec, ViewSpec::Qk { .. }) {
                state.tab = Tab::Qk;
                state.qk.single = true;
                state.qk.selected = None;
                state.qk.camera = Default::default();
                let (method, dims) = chosen_layout(&doc.session, &args, layer, head);
                state.qk.method = method;
                state.qk.three_d = dims == 3;
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
        assert_eq!(
            parse_view("qk:1.2").unwrap(),
            ViewSpec::Qk { layer: 1, head: 2 }
        );
    }
}
