//! Sessions as the app saves them: tensors, view state and query-key layouts come back
//! identical.

use headwise::document::Document;
use headwise::gui::files::session_to_save;
use headwise::views::state::{OverviewMode, Selection, Tab, ViewState};
use headwise_engine::analysis::aggregate::Reduce;
use headwise_engine::analysis::metrics::HeadMetric;
use headwise_engine::analysis::projection::Method;
use headwise_engine::session::{Session, StoreDtype};
use headwise_tests::{scratch, traced_session};

#[test]
fn a_saved_session_reopens_with_identical_tensors_and_view() {
    let dir = scratch("app-session");
    let first = traced_session(
        &dir,
        "tiny-llama",
        &["one two three", "four five"],
        "first.safetensors",
    );
    let doc = Document::new(Session::open(&first).unwrap());
    // A layout laid out since the session opened, as the projector adds them.
    let n = doc.session.corpus_tokens();
    let points: Vec<f32> = (0..2 * n * 2).map(|i| i as f32 * 0.25).collect();
    doc.projections
        .insert(Method::Pca, 1, 2, 2, points.clone(), 0);
    let view = ViewState {
        tab: Tab::Head,
        input: 1,
        layer: 1,
        head: 3,
        overview_mode: OverviewMode::Metric(HeadMetric::PreviousToken),
        sort_by: Some(HeadMetric::Entropy),
        selection: Selection::Model(Reduce::Max),
        hide_special: true,
        window: Some([0.5, 1.0, 2.0, 2.0]),
        ..Default::default()
    };
    let session = session_to_save(&doc, &view);
    let second = dir.join("second.safetensors");
    session.save(&second, StoreDtype::F32).unwrap();
    let reopened = Session::open(&second).unwrap();
    assert_eq!(reopened.layers, doc.session.layers);
    assert_eq!(reopened.meta, session.meta);
    assert_eq!(reopened.meta.inputs, doc.session.meta.inputs);
    assert_eq!(ViewState::from_json(&reopened.meta.view), view);
    assert_eq!(reopened.projection(Method::Pca, 1, 2), Some((2, points)));
}
