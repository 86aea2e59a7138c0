//! Sessions as the app saves them: tensors and view state come back identical.

use headwise::views::state::{OverviewMode, Selection, Tab, ViewState};
use headwise_engine::analysis::aggregate::Reduce;
use headwise_engine::analysis::metrics::HeadMetric;
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
    let mut session = Session::open(&first).unwrap();
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
    session.meta.view = view.to_json();
    let second = dir.join("second.safetensors");
    session.save(&second, StoreDtype::F32).unwrap();
    let reopened = Session::open(&second).unwrap();
    assert_eq!(reopened.layers, session.layers);
    assert_eq!(reopened.meta, session.meta);
    assert_eq!(ViewState::from_json(&reopened.meta.view), view);
}
