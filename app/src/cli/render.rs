//! `headwise render`: draws a view of a session offscreen into a PNG, with the same view code and
//! shaders as the window.

use super::progress::fraction_bar;
use crate::document::Document;
use crate::render::colormap::ColorMap;
use crate::render::offscreen::Offscreen;
use crate::render::png::save_png;
use crate::views::overview;
use crate::views::state::{OverviewMode, PatchSource, Selection, ViewState};
use crate::views::{self, RenderOptions};
use anyhow::{Context, Result, bail};
use clap::Args;
use eframe::egui;
use headwise_engine::analysis::projection::Method;
use headwise_engine::device::shared_wgpu_setup;
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
    /// Value-weighted attention, ‖α_ij v_j‖ renormalised per row, instead of the raw weights.
    #[arg(long)]
    pub value_weighted: bool,
    /// overview: colour each head by this metric (entropy, distance, previous, sink, self,
    /// special, secondary-sink, dormancy, streaming, retrieval, importance) instead of its
    /// thumbnail, or by `change` (an edited run against its base), or draw each head's
    /// ∂target/∂A ⊙ A with `gradient` (a session traced with --gradients).
    #[arg(long)]
    pub metric: Option<String>,
    /// Draw what a gradient run gave (a session traced with --gradients): the overview's cells
    /// sized by importance, the head view's ∂target/∂A ⊙ A (signed), the image view's
    /// relevance map.
    #[arg(long)]
    pub gradients: bool,
    /// image view: what lies over the picture instead of the head's attention: `rollout`,
    /// `flow` or `relevance` (a session traced with --gradients).
    #[arg(long)]
    pub overlay: Option<String>,
}

pub fn run(args: RenderArgs) -> Result<()> {
    let (view, head) = views::parse(&args.view)?;
    let mut session = Session::open(&args.session)?;
    if let Some((layer, head)) = head {
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
    }
    let options = RenderOptions {
        method: args.method,
        dims: args.dims,
    };
    let bar = std::sync::OnceLock::new();
    let progress = |message: &str, f: f32| {
        bar.get_or_init(|| fraction_bar(message.to_string()))
            .set_position((f * 1000.0) as u64)
    };
    let prepared = view.prepare(&mut session, head, &options, &progress);
    if let Some(bar) = bar.get() {
        bar.finish_and_clear();
    }
    prepared.with_context(|| format!("--view {}: {}", args.view, args.session.display()))?;
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
    view.select(&doc, &mut state, head, &options)
        .with_context(|| format!("--view {}: {}", args.view, args.session.display()))?;
    state.clamp_to(doc.inputs(), doc.layers(), doc.heads());
    if let Some(name) = &args.colormap {
        state.style.colormap = ColorMap::CHOICES
            .into_iter()
            .find(|m| m.label() == name)
            .with_context(|| format!("--colormap {name}: viridis or greys"))?;
    }
    if args.log {
        state.style.log_scale = true;
    }
    if args.value_weighted {
        state.value_weighted = true;
    }
    if args.gradients {
        if doc
            .session
            .meta
            .inputs
            .get(state.input)
            .is_none_or(|i| i.target.is_none())
        {
            bail!(
                "--gradients: input {} of {} has no gradients (trace it with --gradients)",
                state.input,
                args.session.display()
            );
        }
        state.size_by_importance = true;
        if doc.session.has_gradient_attention(state.input) {
            state.selection = Selection::Gradient { signed: true };
        }
        state.image.source = PatchSource::Relevance;
    }
    if let Some(name) = &args.overlay {
        state.image.source = match name.as_str() {
            "rollout" => PatchSource::Rollout,
            "flow" => PatchSource::Flow,
            "relevance" => PatchSource::Relevance,
            other => bail!("--overlay {other}: rollout, flow or relevance"),
        };
    }
    if args.metric.as_deref() == Some("gradient") {
        // The overview's cells and the head view as ∂target/∂A ⊙ A.
        state.overview_mode = OverviewMode::Gradient;
        state.selection = Selection::Gradient { signed: false };
    } else if args.metric.as_deref() == Some("change") {
        // The overview by change, the head view as a difference.
        state.overview_mode = OverviewMode::Change;
        state.selection = Selection::Change;
    } else if let Some(name) = &args.metric {
        let metric = overview::metric_named(name).with_context(|| {
            format!(
                "--metric {name}: one of {}",
                overview::METRIC_NAMES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        state.overview_mode = OverviewMode::Metric(metric);
    }
    let setup = shared_wgpu_setup().context(
        "no wgpu adapter: rendering needs a GPU or a software Vulkan driver (Mesa lavapipe)",
    )?;
    let mut offscreen = Offscreen::new(setup.device, setup.queue, egui::Visuals::dark());
    let natural = view.natural_size(&doc, &state);
    let size = egui::vec2(
        args.width.unwrap_or(natural.x),
        args.height.unwrap_or(natural.y),
    );
    let image = views::render(&mut offscreen, &doc, &mut state, size, args.scale)?;
    save_png(&image, &args.out)?;
    eprintln!(
        "wrote {} ({}x{})",
        args.out.display(),
        image.width(),
        image.height()
    );
    Ok(())
}
