//! The views, one file each, and their registry: [`VIEWS`] is the one list of them, and
//! [`View`] is everything the window, PNG export and `headwise render` need of a view (name,
//! help, the window's `ui`, the offscreen figure, its natural size, export file name, what
//! `--view` calls it, and the actions it asks of the app). Nothing outside this folder matches
//! on a view.

pub mod camera;
pub mod compare;
pub mod grid;
pub mod head;
pub mod image;
pub mod legend;
pub mod lines;
pub mod overview;
pub mod picture;
pub mod qk;
pub mod qk_single;
pub mod qk_style;
pub mod state;
pub mod tokens;

use crate::document::Document;
use crate::render::offscreen::Offscreen;
use anyhow::{Context, Result, bail};
use eframe::egui;
use headwise_engine::analysis::projection::Method;
use headwise_engine::session::Session;
use state::{Tab, ViewState};
use std::sync::Arc;

/// Every view, in the order of the tab bar and of the number keys 1, 2, 3, ...
pub static VIEWS: &[&dyn View] = &[
    &overview::OverviewView,
    &head::HeadView,
    &image::ImageView,
    &qk::QkView,
    &tokens::TokensView,
    &compare::CompareView,
];

/// What a view asks of the app after a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewAction {
    /// Show `layer`.`head` in the view `tab` (the zoom and extra line heads reset).
    Open { tab: Tab, layer: usize, head: usize },
    /// Lay out query-key embeddings.
    Project(qk::QkAction),
    /// Run the prompt again with this edit too (`ablate:L.H`, `scale:L.H:K=F`, ...).
    Edit(String),
}

/// What `headwise render` was asked besides the view, for views that use it.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Query-key views: the layout's method and dimensions.
    pub method: Option<Method>,
    pub dims: Option<usize>,
}

/// What a view is called and what it is for: fixed for each view.
pub struct ViewInfo {
    /// The tab this view is, as saved in a session's view state.
    pub tab: Tab,
    /// Its name in the tab bar, the View menu and the help.
    pub name: &'static str,
    /// What it shows, in a line of the help window.
    pub help: &'static str,
    /// What `headwise render --view` calls it (`NAME` or `NAME:L.H`).
    pub command_name: &'static str,
    /// Whether `--view` names a head (`NAME:L.H`) for it.
    pub takes_head: bool,
}

/// One view. Implemented once per view, in the view's own file.
pub trait View: Sync {
    /// Its name, help line and tab.
    fn info(&self) -> &'static ViewInfo;

    fn tab(&self) -> Tab {
        self.info().tab
    }

    fn name(&self) -> &'static str {
        self.info().name
    }

    fn help(&self) -> &'static str {
        self.info().help
    }

    fn command_name(&self) -> &'static str {
        self.info().command_name
    }

    fn takes_head(&self) -> bool {
        self.info().takes_head
    }

    /// Whether it can show input `input` of `doc` (the window hides its tab otherwise).
    fn available(&self, _doc: &Document, _input: usize) -> bool {
        true
    }

    /// Whether a new document whose `input` is of this view's kind opens on it.
    fn opens_on(&self, _doc: &Document, _input: usize) -> bool {
        false
    }

    /// Whether the window shows the corpus bar (run a corpus, projection progress) above it.
    fn over_corpus(&self) -> bool {
        false
    }

    /// The window: its controls and body, in the space left in `ui`.
    fn ui(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<ViewAction>;

    /// The title over its figure.
    fn title(&self, doc: &Document, state: &ViewState) -> String;

    /// The body without interactive controls: what a figure shows.
    fn body(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState);

    /// The canvas that fits its figure without scrolling.
    fn natural_size(&self, doc: &Document, state: &ViewState) -> egui::Vec2;

    /// The file name its PNG export suggests.
    fn file_name(&self, state: &ViewState) -> String;

    /// `headwise render`: sets `state` to show this view of `layer`.`head` (None for views
    /// that take no head), or says why it cannot.
    fn select(
        &self,
        doc: &Document,
        state: &mut ViewState,
        head: Option<(usize, usize)>,
        _options: &RenderOptions,
    ) -> Result<()> {
        state.tab = self.tab();
        if let Some((layer, head)) = head {
            state.layer = layer;
            state.head = head;
        }
        let _ = doc;
        Ok(())
    }

    /// `headwise render`: what the session needs before it opens as a document (the query-key
    /// view lays out the head it draws), with progress for a long step.
    fn prepare(
        &self,
        _session: &mut Session,
        _head: Option<(usize, usize)>,
        _options: &RenderOptions,
        _progress: &(dyn Fn(&str, f32) + Sync),
    ) -> Result<()> {
        Ok(())
    }

    /// Whether its figure shows head metrics: a picture drawn once waits for them (for a long
    /// input that is a pass over every head's attention, so views without metrics skip it).
    fn shows_metrics(&self) -> bool {
        false
    }

    /// Exporting every head from this view: one head's figure (the layer, head and settings
    /// are in `state`), and its canvas. By default, the head view's heatmap.
    fn head_figure(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
        draw_with(&head::HeadView, ui, doc, state);
    }

    fn head_figure_size(&self, doc: &Document, state: &ViewState) -> egui::Vec2 {
        head::HeadView.natural_size(doc, state)
    }
}

/// The view of a tab.
pub fn view(tab: Tab) -> &'static dyn View {
    VIEWS
        .iter()
        .copied()
        .find(|v| v.tab() == tab)
        .unwrap_or(VIEWS[0])
}

/// The figure of the view `state` names: its title over its body.
pub fn draw(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
    draw_with(view(state.tab), ui, doc, state);
}

fn draw_with(view: &dyn View, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
    let source = &doc.session.meta.model.source;
    let weighting = if state.value_weighted {
        " (value-weighted, α·|v|)"
    } else {
        ""
    };
    ui.strong(format!("{source}: {}{weighting}", view.title(doc, state)));
    view.body(ui, doc, state);
}

/// The document the views draw for `state`: `doc`, or its value-weighted twin, worked out here
/// if need be (pictures drawn once).
pub fn shown_document(doc: &Arc<Document>, state: &ViewState) -> Result<Arc<Document>> {
    if !state.value_weighted {
        return Ok(doc.clone());
    }
    doc.caches
        .weighted
        .wait(doc)
        .map_err(|e| anyhow::anyhow!("value-weighted attention: {e}"))
}

/// Lays out the view `state` names and renders it offscreen.
pub fn render(
    offscreen: &mut Offscreen,
    doc: &Arc<Document>,
    state: &mut ViewState,
    size: egui::Vec2,
    pixels_per_point: f32,
) -> Result<::image::RgbaImage> {
    let doc = &shown_document(doc, state)?;
    // A picture is drawn once: it waits for the metrics the window would fill in later.
    if view(state.tab).shows_metrics() {
        doc.wait_for_metrics();
    }
    offscreen.render(size, pixels_per_point, |ui| draw(ui, doc, state))
}

/// A view and the (layer, head) a `--view` names, if it names one.
pub type NamedView = (&'static dyn View, Option<(usize, usize)>);

/// The view `--view` names (`NAME` or `NAME:LAYER.HEAD`), and the head it names.
pub fn parse(spec: &str) -> Result<NamedView> {
    let (name, rest) = match spec.split_once(':') {
        Some((name, rest)) => (name, Some(rest)),
        None => (spec, None),
    };
    let names: Vec<String> = VIEWS
        .iter()
        .map(|v| {
            if v.takes_head() {
                format!("{}:L.H", v.command_name())
            } else {
                v.command_name().to_string()
            }
        })
        .collect();
    let Some(view) = VIEWS.iter().copied().find(|v| v.command_name() == name) else {
        bail!("--view {spec}: unknown view ({})", names.join(", "));
    };
    match (view.takes_head(), rest) {
        (false, None) => Ok((view, None)),
        (false, Some(_)) => bail!("--view {spec}: {name} takes no head"),
        (true, None) => {
            bail!("--view {spec}: expected {name}:LAYER.HEAD, e.g. {name}:3.5")
        }
        (true, Some(rest)) => {
            let (l, h) = rest.split_once('.').with_context(|| {
                format!("--view {spec}: expected {name}:LAYER.HEAD, e.g. {name}:3.5")
            })?;
            let layer = l
                .parse()
                .with_context(|| format!("--view {spec}: '{l}' is not a layer number"))?;
            let head = h
                .parse()
                .with_context(|| format!("--view {spec}: '{h}' is not a head number"))?;
            Ok((view, Some((layer, head))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(spec: &str) -> (Tab, Option<(usize, usize)>) {
        let (view, head) = parse(spec).unwrap();
        (view.tab(), head)
    }

    #[test]
    fn view_names_parse_to_views() {
        assert_eq!(parsed("overview"), (Tab::Overview, None));
        assert_eq!(parsed("head:3.5"), (Tab::Head, Some((3, 5))));
        assert!(parse("head:3").is_err());
        assert!(parse("head:x.1").is_err());
        assert!(parse("overview:1.2").is_err());
        assert_eq!(parsed("image:11.2"), (Tab::Image, Some((11, 2))));
        assert_eq!(parsed("qk:1.2"), (Tab::Qk, Some((1, 2))));
        let unknown = parse("lines:1.1").err().unwrap().to_string();
        assert!(
            unknown.contains("overview, head:L.H, image:L.H, qk:L.H, tokens, compare:L.H"),
            "{unknown}"
        );
    }

    #[test]
    fn every_tab_has_exactly_one_view_and_every_view_a_command_name() {
        for tab in [
            Tab::Overview,
            Tab::Head,
            Tab::Image,
            Tab::Qk,
            Tab::Tokens,
            Tab::Compare,
        ] {
            assert_eq!(
                VIEWS.iter().filter(|v| v.tab() == tab).count(),
                1,
                "{tab:?}"
            );
        }
        let mut names: Vec<_> = VIEWS.iter().map(|v| v.command_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), VIEWS.len());
    }
}
