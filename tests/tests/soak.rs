//! Restless hands: the real app (`HeadwiseApp`, the same object the window runs) driven frame by
//! frame through egui without a display, with random clicks, double clicks, drags, wheel turns,
//! keys, typing and resizes over every view, for a bounded time; with a model run, a corpus
//! session, an image session and an image model's run in between, and bad files dropped on it
//! (a truncated session, a file that is not a picture, a model folder that does not exist),
//! and the open session rewritten by another program (the window reloads it). No panic on any
//! thread, each bad file leaves the last good result on screen, and the app still answers at
//! the end. It prints its duration and the number of events.
//!
//! Paint callbacks are recorded but not executed (there is no renderer): the WGSL side is
//! covered by the rendering and window tests. `HEADWISE_SOAK_SECONDS` sets the length (default
//! 20 s), `HEADWISE_FUZZ_SEED` the seed.

use eframe::egui::{self, Event, Key, Modifiers, PointerButton, Pos2, RawInput, Rect, Vec2};
use headwise::gui::app::{HeadwiseApp, StartOptions};
use headwise_engine::device::DeviceChoice;
use headwise_engine::pipeline::{self, Inputs, RunOptions};
use headwise_engine::session::{InputInfo, StoreDtype};
use headwise_tests::hostile::{Rng, fuzz_seed};
use headwise_tests::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A file dropped on the window: its path, read on demand.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// Panics seen on any thread (the app's jobs run on their own).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// The window, headless: the app, its egui context and the frame it is given.
struct Window {
    app: HeadwiseApp,
    ctx: egui::Context,
    frame: eframe::Frame,
    size: Vec2,
    start: Instant,
    events: usize,
    frames: usize,
    /// Every labelled widget of the last frame and its centre (through AccessKit).
    labels: Vec<(String, Pos2)>,
}

impl Window {
    fn new(options: StartOptions) -> Self {
        let ctx = egui::Context::default();
        let cc = eframe::CreationContext::_new_kittest(ctx.clone());
        let app = HeadwiseApp::new(&cc, options);
        Self {
            app,
            ctx,
            frame: eframe::Frame::_new_kittest(),
            size: egui::vec2(1400.0, 900.0),
            start: Instant::now(),
            events: 0,
            frames: 0,
            labels: Vec::new(),
        }
    }

    /// One frame with these events (and dropped files). Returns where the button labelled
    /// `Discard` of the unsaved-results dialog is, if it is open (found through AccessKit, as
    /// a screen reader would).
    fn frame(&mut self, events: Vec<Event>, dropped: Vec<PathBuf>) -> Option<Pos2> {
        self.events += events.len() + dropped.len();
        self.frames += 1;
        // The modifiers held for this frame's events, announced first as a window would.
        let modifiers = events
            .iter()
            .find_map(|e| match e {
                Event::Key { modifiers, .. } | Event::PointerButton { modifiers, .. } => {
                    Some(*modifiers)
                }
                _ => None,
            })
            .unwrap_or_default();
        let mut events = events;
        events.insert(0, Event::ModifiersChanged(modifiers));
        let input = RawInput {
            screen_rect: Some(Rect::from_min_size(Pos2::ZERO, self.size)),
            time: Some(self.start.elapsed().as_secs_f64()),
            predicted_dt: 1.0 / 60.0,
            events,
            dropped_files: dropped
                .into_iter()
                .map(|path| Arc::new(Dropped(path)) as egui::DroppedFileHandle)
                .collect(),
            focused: true,
            ..Default::default()
        };
        let (app, frame) = (&mut self.app, &mut self.frame);
        self.ctx.enable_accesskit();
        let output = self.ctx.run_ui(input, |ui| {
            eframe::App::ui(app, ui, frame);
        });
        let ppp = output.pixels_per_point as f64;
        self.labels = output
            .platform_output
            .accesskit_update
            .iter()
            .flat_map(|update| &update.nodes)
            .filter_map(|(_, node)| {
                let b = node.bounds()?;
                let centre = egui::pos2(
                    ((b.x0 + b.x1) / 2.0 / ppp) as f32,
                    ((b.y0 + b.y1) / 2.0 / ppp) as f32,
                );
                Some((node.label()?.to_string(), centre))
            })
            .collect();
        let discard = self.label("Discard");
        // No renderer: textures and shapes are dropped.
        let _ = self.ctx.tessellate(output.shapes, output.pixels_per_point);
        discard
    }

    /// Where the widget labelled `label` was in the last frame.
    fn label(&self, label: &str) -> Option<Pos2> {
        self.labels
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, p)| *p)
    }

    /// A click with `button` at `at`, over two frames.
    fn click(&mut self, at: Pos2, button: PointerButton) {
        let press = |pressed| Event::PointerButton {
            pos: at,
            button,
            pressed,
            modifiers: Modifiers::NONE,
        };
        let _ = self.frame(vec![Event::PointerMoved(at), press(true)], Vec::new());
        let _ = self.frame(vec![press(false)], Vec::new());
    }

    /// Right-clicks over the overview until a head's menu opens, picks "ablate this head", and
    /// waits for the edited run: it must follow its base in the document on screen.
    fn ablate_a_head_from_the_overview(&mut self) {
        self.press(Key::Num1);
        let mut opened = None;
        'search: for y in (150..850).step_by(50) {
            for x in (330..1350).step_by(60) {
                self.click(egui::pos2(x as f32, y as f32), PointerButton::Secondary);
                let _ = self.frame(Vec::new(), Vec::new());
                if let Some(at) = self.label("ablate this head") {
                    opened = Some(at);
                    break 'search;
                }
            }
        }
        let at = opened.expect("a right-click on the overview opens a head's menu");
        self.click(at, PointerButton::Primary);
        let edited = self.until(Duration::from_secs(120), |app| {
            app.document().is_some_and(|doc| {
                let inputs = &doc.session.meta.inputs;
                inputs.len() == 2
                    && inputs[1].base == Some(0)
                    && inputs[1].edits.len() == 1
                    && inputs[1].edits[0].starts_with("ablate:")
            })
        });
        assert!(edited, "no edited run: {:?}", self.app.on_screen());
    }

    /// In the head view, right-clicks the heatmap until a key's menu opens and halves every
    /// query's attention to that key: the next run carries both edits.
    fn scale_a_key_from_the_head_view(&mut self) {
        self.press(Key::Num2);
        let _ = self.frame(Vec::new(), Vec::new());
        let mut opened = None;
        'search: for y in (250..850).step_by(50) {
            for x in (450..1350).step_by(60) {
                self.click(egui::pos2(x as f32, y as f32), PointerButton::Secondary);
                let _ = self.frame(Vec::new(), Vec::new());
                if let Some(at) = self.label("halve it") {
                    opened = Some(at);
                    break 'search;
                }
            }
        }
        let at = opened.expect("a right-click on the head view's heatmap opens a key's menu");
        self.click(at, PointerButton::Primary);
        let edited = self.until(Duration::from_secs(120), |app| {
            app.document().is_some_and(|doc| {
                let inputs = &doc.session.meta.inputs;
                inputs.len() == 2
                    && inputs[1].edits.len() == 2
                    && inputs[1].edits[1].starts_with("scale:")
                    && inputs[1].edits[1].ends_with("=0.5")
            })
        });
        assert!(
            edited,
            "no run with the key scaled: {:?}",
            self.app.on_screen()
        );
    }

    /// Where the widget labelled `label` is, opening the collapsed panel `panel` first if the
    /// widget is not shown.
    fn show_in_panel(&mut self, panel: &str, label: &str) -> Pos2 {
        // Whatever restless hands left open over the panels (a menu, the help) closes first.
        self.press(Key::Escape);
        self.press(Key::Escape);
        let _ = self.frame(Vec::new(), Vec::new());
        if self.label(label).is_none() {
            let header = self.scrolled_to(panel);
            self.click(header, PointerButton::Primary);
            // The panel opens with an animation: the widget's place is final after it.
            let opened = Instant::now();
            while opened.elapsed() < Duration::from_millis(500) {
                let _ = self.frame(Vec::new(), Vec::new());
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.scrolled_to(label)
    }

    /// Scrolls the panel that holds the widget labelled `label` until it is on screen (restless
    /// wheels may have scrolled it anywhere), and says where it is.
    fn scrolled_to(&mut self, label: &str) -> Pos2 {
        for _ in 0..40 {
            let at = self
                .label(label)
                .unwrap_or_else(|| panic!("{label:?} is not shown"));
            let middle = self.size.y / 2.0;
            if (middle - at.y).abs() < middle - 60.0 {
                return at;
            }
            let wheel = Event::MouseWheel {
                unit: egui::MouseWheelUnit::Point,
                delta: egui::vec2(0.0, (middle - at.y).clamp(-200.0, 200.0)),
                modifiers: Modifiers::NONE,
                phase: egui::TouchPhase::Move,
                source: egui::MouseWheelSource::Wheel,
            };
            let _ = self.frame(
                vec![Event::PointerMoved(egui::pos2(at.x, middle)), wheel],
                Vec::new(),
            );
            for _ in 0..3 {
                let _ = self.frame(Vec::new(), Vec::new());
            }
        }
        panic!("{label:?} could not be scrolled onto the screen")
    }

    /// Clicks the widget labelled `label` in the panel `panel`.
    fn click_in_panel(&mut self, panel: &str, label: &str) {
        let at = self.show_in_panel(panel, label);
        self.click(at, PointerButton::Primary);
    }

    /// Waits for a run whose document satisfies `done`.
    fn until_document(&mut self, what: &str, done: impl Fn(&[InputInfo]) -> bool) {
        let reached = self.until(Duration::from_secs(120), |app| {
            app.document()
                .is_some_and(|doc| done(&doc.session.meta.inputs))
        });
        let inputs: Vec<_> = self.app.document().map_or(Vec::new(), |doc| {
            doc.session
                .meta
                .inputs
                .iter()
                .map(|i| (i.base, i.edits.len(), i.generated))
                .collect()
        });
        assert!(
            reached,
            "no run with {what}: {:?}; inputs (base, edits, generated): {inputs:?}",
            self.app.on_screen()
        );
    }

    /// A second prompt side by side (from the "Compare with" panel), then the text continued
    /// (from the "Continue the text" panel); the Compare tab shows the two; both switched off
    /// again, the runs are as before.
    fn compare_a_second_prompt_and_continue_the_text(&mut self) {
        self.size = egui::vec2(1400.0, 900.0);
        self.settle();
        // The prompt and its edited run, the second prompt and its edited run.
        self.click_in_panel("Compare with", "a second prompt, side by side");
        self.until_document("a second prompt", |inputs| {
            inputs.len() == 4 && inputs[2].base.is_none() && inputs[3].base == Some(2)
        });
        // The Compare tab: the two prompts side by side.
        self.press(Key::Num6);
        self.click_in_panel("Continue the text", "generate before each run");
        self.until_document("continued text", |inputs| {
            inputs.len() == 4 && inputs.iter().all(|i| i.generated.is_some())
        });
        for _ in 0..3 {
            let _ = self.frame(Vec::new(), Vec::new());
        }
        self.click_in_panel("Continue the text", "generate before each run");
        self.until_document("the text not continued", |inputs| {
            inputs.iter().all(|i| i.generated.is_none())
        });
        self.click_in_panel("Compare with", "a second prompt, side by side");
        self.until_document("one prompt again", |inputs| inputs.len() == 2);
        self.press(Key::Num1);
    }

    /// One key pressed and released.
    fn press(&mut self, key: Key) {
        let event = |pressed| Event::Key {
            key,
            physical_key: None,
            pressed,
            repeat: false,
            modifiers: Modifiers::NONE,
        };
        let _ = self.frame(vec![event(true), event(false)], Vec::new());
    }

    /// Switches gradients on in the Gradients panel and picks a next token other than the most
    /// likely as the target (by its id, as the panel's chip does): the next run's target is
    /// that token.
    fn pick_a_gradient_target(&mut self) {
        self.size = egui::vec2(1400.0, 900.0);
        self.settle();
        // Restless hands may have switched them on already: the run on screen says.
        let on = self
            .app
            .document()
            .is_some_and(|doc| doc.session.meta.inputs[0].target.is_some());
        let tick = self.show_in_panel("Gradients", "compute gradients on each run");
        if !on {
            self.click(tick, PointerButton::Primary);
        }
        let with_gradients = self.until(Duration::from_secs(60), |app| {
            app.document()
                .is_some_and(|doc| doc.session.meta.inputs[0].target.is_some())
        });
        assert!(
            with_gradients,
            "no run with gradients: {:?}; labels: {:?}",
            self.app.on_screen(),
            self.labels
        );
        // The panel offers the next tokens of the input on screen.
        let second = {
            let doc = self.app.document().unwrap();
            let offered = &doc.session.meta.inputs[self.app.shown_input()].next_tokens;
            let offered = &offered[..offered.len().min(5)];
            // One that is not the most likely, and whose chip no other token's looks like
            // (byte tokens all show as "�").
            offered[1..]
                .iter()
                .find(|t| offered.iter().filter(|o| o.token == t.token).count() == 1)
                .expect("a next token with a chip of its own")
                .clone()
        };
        let _ = self.frame(Vec::new(), Vec::new());
        // The token panel shows the same label above; the chip is the last.
        let chip = self
            .labels
            .iter()
            .rev()
            .find(|(l, _)| *l == format!("{:?}", second.token))
            .map(|(_, p)| *p)
            .unwrap_or_else(|| {
                panic!(
                    "a chip for {:?}; labels: {:?}",
                    second.token,
                    self.labels.iter().map(|(l, _)| l).collect::<Vec<_>>()
                )
            });
        self.click(chip, PointerButton::Primary);
        let targeted = self.until(Duration::from_secs(120), |app| {
            app.document().is_some_and(|doc| {
                doc.session.meta.inputs[0]
                    .target
                    .as_ref()
                    .is_some_and(|t| t.id == second.id as usize)
            })
        });
        assert!(
            targeted,
            "no run with {:?} as the target: {:?}",
            second.token,
            self.app.on_screen()
        );
    }

    /// Another program (a notebook) rewrites the open session file `open` with the content
    /// of `other`: the window reloads it by itself.
    fn reloads_a_rewritten_session(&mut self, open: &Path, other: &Path) {
        self.settle();
        let before = self.generation();
        let wanted = std::fs::read(other).unwrap();
        let staging = open.with_extension("rewriting");
        std::fs::write(&staging, &wanted).unwrap();
        std::fs::rename(&staging, open).unwrap();
        let reloaded = self.until(Duration::from_secs(30), |app| {
            app.on_screen().0 != before
                && app
                    .document()
                    .is_some_and(|doc| doc.session.meta.inputs[0].image.is_some())
        });
        assert!(
            reloaded,
            "the rewritten session was not reloaded: {:?}, status {:?}",
            self.app.on_screen(),
            self.app.status_line()
        );
    }

    /// Answers "Discard" when the unsaved-results dialog asks (dropping a file on unsaved
    /// results asks first).
    fn idle_frame(&mut self) {
        if self.frame(Vec::new(), Vec::new()).is_none() {
            return;
        }
        // Escape first: the help window, if restless hands opened it, may lie over the dialog.
        let escape = |pressed| Event::Key {
            key: Key::Escape,
            physical_key: None,
            pressed,
            repeat: false,
            modifiers: Modifiers::NONE,
        };
        if let Some(at) = self.frame(vec![escape(true), escape(false)], Vec::new()) {
            let click = |pressed| Event::PointerButton {
                pos: at,
                button: PointerButton::Primary,
                pressed,
                modifiers: Modifiers::NONE,
            };
            self.frame(vec![Event::PointerMoved(at), click(true)], Vec::new());
            self.frame(vec![click(false)], Vec::new());
        }
    }

    /// Frames without input until `done` holds (jobs finish on their threads), at most `limit`.
    fn until(&mut self, limit: Duration, mut done: impl FnMut(&HeadwiseApp) -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            self.idle_frame();
            if done(&self.app) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for runs and loads that restless hands started to finish, so that what follows
    /// is the dropped file's doing.
    fn settle(&mut self) {
        let settled = self.until(Duration::from_secs(120), HeadwiseApp::settled);
        assert!(settled, "the app never settled: {:?}", self.app.on_screen());
    }

    fn generation(&self) -> Option<u64> {
        self.app.on_screen().0
    }

    /// Drops a bad file and checks it is reported while the last good result stays.
    fn drop_bad(&mut self, path: &Path) {
        self.settle();
        let before = self.generation();
        let error_before = self.app.on_screen().1.map(str::to_string);
        assert!(
            before.is_some(),
            "a result is on screen before {}",
            path.display()
        );
        let _ = self.frame(Vec::new(), vec![path.to_path_buf()]);
        let reported = self.until(Duration::from_secs(60), |app| {
            let error = app.on_screen().1;
            error.is_some() && error != error_before.as_deref()
        });
        if !reported {
            self.ctx.enable_accesskit();
            let out = self.ctx.run_ui(RawInput::default(), |ui| {
                eframe::App::ui(&mut self.app, ui, &mut self.frame);
            });
            let labels: Vec<String> = out
                .platform_output
                .accesskit_update
                .iter()
                .flat_map(|u| &u.nodes)
                .filter_map(|(_, n)| Some(format!("{:?}@{:?}", n.label()?, n.bounds())))
                .collect();
            panic!(
                "{} was not reported: {:?}; on screen: {}",
                path.display(),
                self.app.on_screen(),
                labels.join(" | ")
            );
        }
        assert_eq!(
            self.generation(),
            before,
            "{} replaced the last good result",
            path.display()
        );
    }

    /// Drops a good file and waits for it to be on screen.
    fn drop_good(&mut self, path: &Path) {
        self.settle();
        let before = self.generation();
        let _ = self.frame(Vec::new(), vec![path.to_path_buf()]);
        let shown = self.until(Duration::from_secs(120), |app| {
            let (generation, _) = app.on_screen();
            generation.is_some() && generation != before
        });
        assert!(
            shown,
            "{} did not reach the screen: {:?}",
            path.display(),
            self.app.on_screen().1
        );
    }

    /// `seconds` of random input.
    fn restless(&mut self, rng: &mut Rng, seconds: f64) {
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        while Instant::now() < until {
            let events = random_events(rng, &mut self.size);
            let _ = self.frame(events, Vec::new());
        }
    }
}

fn pos(rng: &mut Rng, size: Vec2) -> Pos2 {
    egui::pos2(
        rng.below(size.x as usize + 40) as f32 - 20.0,
        rng.below(size.y as usize + 40) as f32 - 20.0,
    )
}

/// Keys that do not open native file dialogs (Ctrl/Cmd combinations do: open, save, export).
const KEYS: &[Key] = &[
    Key::ArrowLeft,
    Key::ArrowRight,
    Key::ArrowUp,
    Key::ArrowDown,
    Key::Enter,
    Key::Escape,
    Key::Tab,
    Key::Space,
    Key::Backspace,
    Key::Delete,
    Key::Home,
    Key::End,
    Key::PageUp,
    Key::PageDown,
    Key::F1,
    Key::Num1,
    Key::Num2,
    Key::Num3,
    Key::Num4,
    Key::Num5,
    Key::Questionmark,
    Key::A,
    Key::L,
    Key::R,
    Key::Z,
];

/// One frame's worth of restless input.
fn random_events(rng: &mut Rng, size: &mut Vec2) -> Vec<Event> {
    let mods = [
        Modifiers::NONE,
        Modifiers::NONE,
        Modifiers::SHIFT,
        Modifiers::ALT,
    ][rng.below(4)];
    let mut events = Vec::new();
    let at = pos(rng, *size);
    match rng.below(20) {
        0..=5 => events.push(Event::PointerMoved(at)),
        6..=9 => {
            let button = [
                PointerButton::Primary,
                PointerButton::Primary,
                PointerButton::Secondary,
            ][rng.below(3)];
            let clicks = 1 + usize::from(rng.below(4) == 0);
            for _ in 0..clicks {
                for pressed in [true, false] {
                    events.push(Event::PointerButton {
                        pos: at,
                        button,
                        pressed,
                        modifiers: mods,
                    });
                }
            }
        }
        10 | 11 => {
            // A drag: press, a few moves, release.
            events.push(Event::PointerMoved(at));
            events.push(Event::PointerButton {
                pos: at,
                button: PointerButton::Primary,
                pressed: true,
                modifiers: mods,
            });
            let mut p = at;
            for _ in 0..1 + rng.below(5) {
                p += egui::vec2(rng.below(200) as f32 - 100.0, rng.below(200) as f32 - 100.0);
                events.push(Event::PointerMoved(p));
            }
            events.push(Event::PointerButton {
                pos: p,
                button: PointerButton::Primary,
                pressed: false,
                modifiers: mods,
            });
        }
        12 | 13 => {
            events.push(Event::PointerMoved(at));
            events.push(Event::MouseWheel {
                unit: egui::MouseWheelUnit::Point,
                delta: egui::vec2(rng.below(200) as f32 - 100.0, rng.below(400) as f32 - 200.0),
                modifiers: mods,
                phase: egui::TouchPhase::Move,
                source: egui::MouseWheelSource::Wheel,
            });
        }
        14..=16 => {
            let key = KEYS[rng.below(KEYS.len())];
            for pressed in [true, false] {
                events.push(Event::Key {
                    key,
                    physical_key: None,
                    pressed,
                    repeat: false,
                    modifiers: mods,
                });
            }
        }
        17 => {
            let words = ["the", " cat", " 42", "é", " whale", "\u{1F40B}", "  "];
            events.push(Event::Text(words[rng.below(words.len())].to_string()));
        }
        18 => events.push(Event::Zoom(0.5 + rng.below(100) as f32 / 100.0)),
        _ => {
            *size = egui::vec2(
                300.0 + rng.below(1700) as f32,
                200.0 + rng.below(1200) as f32,
            );
        }
    }
    events
}

/// The sessions dropped on the window: a corpus (tiny Llama over the projection corpus) and a
/// picture (tiny DINOv2), traced in-process.
fn sessions(dir: &Path) -> (PathBuf, PathBuf) {
    let trace = |model: &str, inputs: Inputs, name: &str| {
        let model = load(&fixture(model), DeviceChoice::Cpu);
        let run = pipeline::run(&model, name, &inputs, &RunOptions::default(), &mut |_| true)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = dir.join(name);
        run.session.save(&path, StoreDtype::F32).unwrap();
        path
    };
    let corpus = std::fs::read_to_string(fixture("projection").join("corpus.txt")).unwrap();
    let lines = pipeline::text_lines(&corpus, 24);
    let corpus = trace("tiny-llama", Inputs::Texts(lines), "corpus.safetensors");
    let image = trace(
        "tiny-dinov2",
        Inputs::Images(vec![fixture("images").join("small.png")]),
        "image.safetensors",
    );
    (corpus, image)
}

#[test]
fn the_app_survives_restless_hands_over_every_view_and_keeps_the_last_good_result() {
    let dir = scratch("soak");
    // The app's settings and caches go to the scratch folder; no display, so a native file
    // dialog, should one open, fails at once instead of waiting for a person.
    // SAFETY (set_var): this test binary has no other test, and no thread has started yet.
    unsafe {
        std::env::set_var("HEADWISE_HOME", &dir);
        // A click on a model to fetch fails at once instead of downloading it.
        std::env::set_var("HEADWISE_PYTHON", dir.join("no-python"));
        for var in ["DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"] {
            std::env::remove_var(var);
        }
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let seconds: f64 = std::env::var("HEADWISE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    // A frame that never returns (a dialog waiting for a person) must fail the test, not hang it.
    let deadline = Duration::from_secs_f64(seconds + 600.0);
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("soak: still running after {deadline:?}; a frame is stuck");
        std::process::abort();
    });
    let (corpus, image) = sessions(&dir);
    let truncated = truncated_copy(&corpus, 1, 2, &dir, "truncated.safetensors");
    let not_a_picture = fixture("images").join("not-an-image.png");
    let no_model = dir.join("no-such-model");
    let mut rng = Rng::new(fuzz_seed());
    let started = Instant::now();

    let mut window = Window::new(StartOptions {
        model: Some(fixture("tiny-llama").display().to_string()),
        device: DeviceChoice::Cpu,
        ..Default::default()
    });
    // The model loads and runs the default prompt: a model run.
    assert!(
        window.until(Duration::from_secs(120), |app| app.on_screen().0.is_some()),
        "the first run never reached the screen: {:?}",
        window.app.on_screen().1
    );
    // Interventions from the window: right-click a head, ablate it, the edited run appears.
    window.ablate_a_head_from_the_overview();
    window.scale_a_key_from_the_head_view();
    window.compare_a_second_prompt_and_continue_the_text();
    // Gradients on with a typed target (a token id of this model) from here to the end, where
    // an image model must not take the id for one of its classes.
    window.pick_a_gradient_target();
    let slice = seconds / 4.0;
    window.restless(&mut rng, slice);
    window.drop_good(&corpus);
    window.reloads_a_rewritten_session(&corpus, &image);
    window.restless(&mut rng, slice);
    window.drop_bad(&truncated);
    window.drop_bad(&not_a_picture);
    window.drop_good(&image);
    window.restless(&mut rng, slice);
    window.drop_bad(&no_model);
    // An image model, then a picture: an image run (with gradients, for its most likely class,
    // unless restless hands switched them off).
    // (The picture's run follows the model's load.)
    let _ = window.frame(Vec::new(), vec![fixture("tiny-dinov2")]);
    window.drop_good(&fixture("images").join("small.png"));
    window.restless(&mut rng, slice);
    // Still answering: the views switch and the result is still there.
    for key in [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num1] {
        window.press(key);
    }
    assert!(
        window.generation().is_some(),
        "a result is on screen at the end"
    );
    let panics = PANICS.load(Ordering::SeqCst);
    eprintln!(
        "soak: {:.1} s, {} events over {} frames (seed {}), {panics} panics",
        started.elapsed().as_secs_f64(),
        window.events,
        window.frames,
        fuzz_seed()
    );
    assert_eq!(panics, 0, "panics on the app's threads (see above)");
}
