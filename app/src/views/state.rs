//! What the views show, as saved in a session's `view` metadata and restored on opening: the
//! tab, the chosen input, layer and head, and each view's settings.

use super::camera::Camera;
use crate::render::heatmap::{HeatmapStyle, Matrix};
use headwise_engine::analysis::aggregate::Reduce;
use headwise_engine::analysis::metrics::HeadMetric;
use headwise_engine::analysis::projection::Method;
use headwise_engine::analysis::rollout::RolloutSettings;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Tab {
    #[default]
    Overview,
    Head,
    /// The picture of an image input with a patch heatmap over it.
    Image,
    /// Every head's queries and keys over the corpus, in one joint space.
    Qk,
    /// Per token across layers: hidden-state norm, attention received, value norm.
    Tokens,
    /// Two inputs side by side: one head of each with a shared zoom, and every head's metric
    /// difference.
    Compare,
}

/// What the token panel's heatmap shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TokenQuantity {
    #[default]
    HiddenNorm,
    Received,
    ValueNorm,
}

impl TokenQuantity {
    pub const ALL: [TokenQuantity; 3] = [
        TokenQuantity::HiddenNorm,
        TokenQuantity::Received,
        TokenQuantity::ValueNorm,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TokenQuantity::HiddenNorm => "hidden-state norm",
            TokenQuantity::Received => "attention received",
            TokenQuantity::ValueNorm => "value norm",
        }
    }
}

/// The comparison view's settings: the input shown beside `ViewState::input`, and the metric
/// whose per-head difference it maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompareState {
    pub other: usize,
    pub metric: HeadMetric,
}

impl Default for CompareState {
    fn default() -> Self {
        Self {
            other: 1,
            metric: HeadMetric::Entropy,
        }
    }
}

/// The token panel's settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenPanelState {
    pub quantity: TokenQuantity,
    /// The tokens drawn as lines and marked in the heatmap (none chosen: the first token and
    /// the one with the largest hidden-state norm).
    pub marked: Vec<usize>,
}

/// What colours the points of a query-key scatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ColourBy {
    /// Queries one colour, keys another.
    #[default]
    QueryKey,
    /// The token's position in its input.
    Position,
    /// Position divided by the input's length.
    NormalisedPosition,
    /// Which input the token is from.
    Input,
    /// The length of the joint vector.
    Norm,
}

impl ColourBy {
    pub const ALL: [ColourBy; 5] = [
        ColourBy::QueryKey,
        ColourBy::Position,
        ColourBy::NormalisedPosition,
        ColourBy::Input,
        ColourBy::Norm,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ColourBy::QueryKey => "query / key",
            ColourBy::Position => "position",
            ColourBy::NormalisedPosition => "normalised position",
            ColourBy::Input => "input",
            ColourBy::Norm => "norm",
        }
    }
}

/// The query-key view's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QkViewState {
    pub method: Method,
    pub three_d: bool,
    /// One head in detail (the layer and head of the view state) instead of every head.
    pub single: bool,
    pub colour: ColourBy,
    pub size_by_norm: bool,
    /// Highlight every occurrence of this token (case-insensitive, spaces ignored).
    pub search: String,
    /// UMAP's seed.
    pub seed: u64,
    /// The query (0..N over the corpus) whose lines to its input's keys are drawn.
    pub selected: Option<usize>,
    pub camera: Camera,
    /// The point size in the single view, in points.
    pub point_size: f32,
    /// How many lines of the corpus file a corpus run takes.
    pub corpus_lines: usize,
    /// Image corpora: draw each patch's piece of the picture at its point (single view).
    pub thumbnails: bool,
}

impl Default for QkViewState {
    fn default() -> Self {
        Self {
            method: Method::Pca,
            three_d: false,
            single: false,
            colour: ColourBy::QueryKey,
            size_by_norm: false,
            search: String::new(),
            seed: 0,
            selected: None,
            camera: Camera::default(),
            point_size: 4.0,
            corpus_lines: 400,
            thumbnails: true,
        }
    }
}

impl QkViewState {
    pub fn dims(&self) -> usize {
        if self.three_d { 3 } else { 2 }
    }
}

/// What the image view lays over the picture: one head's attention from the query token, an
/// aggregate over the layer's heads, or the attention rollout up to the last layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PatchSource {
    #[default]
    Head,
    Layer(Reduce),
    Rollout,
    /// Attention flow (maximum flows through the layers), computed in the background.
    Flow,
    /// The relevance of each patch to the gradient run's target (Chefer et al.), stored with
    /// the session.
    Relevance,
}

/// The small overlays under the picture: every head of the layer, or every layer for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PatchGrid {
    #[default]
    Heads,
    Layers,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageViewState {
    pub source: PatchSource,
    /// The query token whose attention is drawn (0: CLS).
    pub query: usize,
    /// The heatmap's opacity over the picture, 0..1.
    pub opacity: f32,
    /// Bilinear between patch centres instead of one flat colour per patch.
    pub smooth: bool,
    pub rollout: RolloutSettings,
    pub grid: PatchGrid,
    /// Ring the high-norm (artifact) patches of the layer on the picture.
    pub mark_outliers: bool,
}

impl Default for ImageViewState {
    fn default() -> Self {
        Self {
            source: PatchSource::Head,
            query: 0,
            opacity: 0.6,
            smooth: false,
            rollout: RolloutSettings::default(),
            grid: PatchGrid::Heads,
            mark_outliers: true,
        }
    }
}

/// The head overview's cells: attention thumbnails, or one colour per head from a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OverviewMode {
    #[default]
    Thumbnails,
    Metric(HeadMetric),
    /// An edited run: how much each head's attention changed against its base.
    Change,
    /// Each head's ∂target/∂A ⊙ A (positive part) from a gradient run, as thumbnails.
    Gradient,
}

/// What the head view draws: one head, or an aggregate over heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Selection {
    #[default]
    Head,
    Layer(Reduce),
    Model(Reduce),
    /// An edited run: this head's attention minus the unedited run's.
    Change,
    /// ∂target/∂A ⊙ A of this head from a gradient run: signed, or its positive part.
    Gradient {
        signed: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewState {
    pub tab: Tab,
    pub input: usize,
    pub layer: usize,
    pub head: usize,
    pub overview_mode: OverviewMode,
    /// Order each layer's heads by this metric, highest first.
    pub sort_by: Option<HeadMetric>,
    pub selection: Selection,
    pub hide_special: bool,
    /// Every attention view shows value-weighted attention, ‖α_ij v_j‖ renormalised per row,
    /// instead of the raw weights α_ij.
    pub value_weighted: bool,
    /// The overview draws each head's cell sized by its importance (Dodrio), where the input
    /// has gradients.
    pub size_by_importance: bool,
    /// The head view's zoom: first column, first row, columns, rows (None: everything).
    pub window: Option<[f32; 4]>,
    /// Attention computed from q, k and lse (long inputs): what a pixel covering many cells
    /// shows, their max or their mean.
    pub region_reduce: Reduce,
    /// The head view's "jump to token" search.
    pub find: String,
    pub show_lines: bool,
    /// Extra heads of the current layer drawn in the token lines, colour-coded.
    pub line_heads: Vec<usize>,
    pub style: HeatmapStyle,
    pub image: ImageViewState,
    pub qk: QkViewState,
    pub tokens: TokenPanelState,
    pub compare: CompareState,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            tab: Tab::Overview,
            input: 0,
            layer: 0,
            head: 0,
            overview_mode: OverviewMode::Thumbnails,
            sort_by: None,
            selection: Selection::Head,
            hide_special: false,
            value_weighted: false,
            size_by_importance: false,
            window: None,
            region_reduce: Reduce::Max,
            find: String::new(),
            show_lines: false,
            line_heads: Vec::new(),
            style: HeatmapStyle::default(),
            image: ImageViewState::default(),
            qk: QkViewState::default(),
            tokens: TokenPanelState::default(),
            compare: CompareState::default(),
        }
    }
}

impl ViewState {
    /// The matrix the head view shows.
    pub fn matrix(&self) -> Matrix {
        match self.selection {
            Selection::Head => Matrix::Head {
                layer: self.layer,
                head: self.head,
            },
            Selection::Layer(reduce) => Matrix::Layer {
                layer: self.layer,
                reduce,
            },
            Selection::Model(reduce) => Matrix::Model { reduce },
            Selection::Change => Matrix::Change {
                layer: self.layer,
                head: self.head,
            },
            Selection::Gradient { signed } => Matrix::Gradient {
                layer: self.layer,
                head: self.head,
                signed,
            },
        }
    }

    /// Keeps indices inside a document of this shape (a session may come from another model).
    pub fn clamp_to(&mut self, inputs: usize, layers: usize, heads: usize) {
        self.input = self.input.min(inputs.saturating_sub(1));
        self.compare.other = self.compare.other.min(inputs.saturating_sub(1));
        self.layer = self.layer.min(layers.saturating_sub(1));
        self.head = self.head.min(heads.saturating_sub(1));
        self.line_heads.retain(|&h| h < heads);
    }

    /// Drops marked tokens past the end of input `tokens` tokens long.
    pub fn clamp_tokens(&mut self, tokens: usize) {
        self.tokens.marked.retain(|&t| t < tokens);
    }

    /// Moves the selected head by `dh` heads and `dl` layers, staying on the grid.
    pub fn step(&mut self, dl: isize, dh: isize, layers: usize, heads: usize) {
        self.layer = (self.layer as isize + dl)
            .clamp(0, layers as isize - 1)
            .max(0) as usize;
        self.head = (self.head as isize + dh)
            .clamp(0, heads as isize - 1)
            .max(0) as usize;
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The state saved in a session, or the default when there is none or it is unreadable
    /// (a view state is a convenience, never a reason to refuse a session).
    pub fn from_json(value: &serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_view_state_is_kept_inside_the_document_comparison_input_included() {
        let mut state = ViewState {
            input: 7,
            compare: CompareState {
                other: 99,
                ..CompareState::default()
            },
            ..ViewState::default()
        };
        state.clamp_to(2, 3, 4);
        assert_eq!((state.input, state.compare.other), (1, 1));
    }

    #[test]
    fn view_state_survives_a_json_round_trip() {
        let state = ViewState {
            tab: Tab::Head,
            layer: 3,
            head: 7,
            overview_mode: OverviewMode::Metric(HeadMetric::Entropy),
            selection: Selection::Layer(Reduce::Max),
            window: Some([1.0, 2.0, 3.0, 4.0]),
            ..Default::default()
        };
        assert_eq!(ViewState::from_json(&state.to_json()), state);
    }

    #[test]
    fn an_unreadable_view_state_falls_back_to_the_default() {
        let state = ViewState::from_json(&serde_json::json!({"layer": "not a number"}));
        assert_eq!(state, ViewState::default());
    }

    #[test]
    fn stepping_stays_on_the_grid() {
        let mut s = ViewState::default();
        s.step(-1, -1, 6, 12);
        assert_eq!((s.layer, s.head), (0, 0));
        s.step(10, 20, 6, 12);
        assert_eq!((s.layer, s.head), (5, 11));
    }
}
