//! The keyboard: one table of shortcuts that both the key handling and the help window read,
//! plus a number key per view, in the registry's order.

use super::app::HeadwiseApp;
use crate::views::state::Tab;
use crate::views::{VIEWS, view};
use eframe::egui::{self, Key, KeyboardShortcut, Modifiers};

/// What a shortcut does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    SaveAs,
    Save,
    OpenSession,
    OpenModelFolder,
    ExportView,
    ExportWindow,
    ToggleHelp,
    CloseHelp,
    PreviousHead,
    NextHead,
    PreviousLayer,
    NextLayer,
    OpenHeadView,
    ToggleValueWeighted,
}

/// One row of the table: each key and what it does, how the help writes the keys, and what
/// the row does in words.
pub struct Shortcut {
    pub keys: &'static [(KeyboardShortcut, Command)],
    /// Works while a text field has the keyboard (the Ctrl shortcuts and F1).
    pub global: bool,
    pub label: &'static str,
    pub help: &'static str,
}

const fn key(modifiers: Modifiers, key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(modifiers, key)
}

const CMD: Modifiers = Modifiers::COMMAND;
const CMD_SHIFT: Modifiers = Modifiers::COMMAND.plus(Modifiers::SHIFT);
const NONE: Modifiers = Modifiers::NONE;
const SHIFT: Modifiers = Modifiers::SHIFT;

/// Every shortcut but the views' number keys (which follow the registry), in the order the
/// help lists them. Ctrl+Shift+S comes before Ctrl+S so that the longer one wins.
pub const SHORTCUTS: &[Shortcut] = &[
    Shortcut {
        keys: &[
            (key(NONE, Key::ArrowLeft), Command::PreviousHead),
            (key(NONE, Key::ArrowRight), Command::NextHead),
        ],
        global: false,
        label: "← →",
        help: "previous / next head",
    },
    Shortcut {
        keys: &[
            (key(NONE, Key::ArrowUp), Command::PreviousLayer),
            (key(NONE, Key::ArrowDown), Command::NextLayer),
        ],
        global: false,
        label: "↑ ↓",
        help: "previous / next layer",
    },
    Shortcut {
        keys: &[(key(NONE, Key::Enter), Command::OpenHeadView)],
        global: false,
        label: "Enter",
        help: "head view of the selected head",
    },
    Shortcut {
        keys: &[(key(NONE, Key::W), Command::ToggleValueWeighted)],
        global: false,
        label: "W",
        help: "raw / value-weighted attention (α·|v|) in every view",
    },
    Shortcut {
        keys: &[(key(CMD, Key::O), Command::OpenSession)],
        global: true,
        label: "Ctrl+O",
        help: "open a session",
    },
    Shortcut {
        keys: &[(key(CMD_SHIFT, Key::S), Command::SaveAs)],
        global: true,
        label: "Ctrl+Shift+S",
        help: "save the session as",
    },
    Shortcut {
        keys: &[(key(CMD, Key::S), Command::Save)],
        global: true,
        label: "Ctrl+S",
        help: "save the session",
    },
    Shortcut {
        keys: &[(key(CMD, Key::M), Command::OpenModelFolder)],
        global: true,
        label: "Ctrl+M",
        help: "open a model folder",
    },
    Shortcut {
        keys: &[(key(CMD_SHIFT, Key::E), Command::ExportWindow)],
        global: true,
        label: "Ctrl+Shift+E",
        help: "export the window as PNG",
    },
    Shortcut {
        keys: &[(key(CMD, Key::E), Command::ExportView)],
        global: true,
        label: "Ctrl+E",
        help: "export the view as PNG (2x)",
    },
    Shortcut {
        keys: &[(key(NONE, Key::F1), Command::ToggleHelp)],
        global: true,
        label: "F1",
        help: "this help",
    },
    Shortcut {
        keys: &[
            (key(SHIFT, Key::Slash), Command::ToggleHelp),
            (key(NONE, Key::Questionmark), Command::ToggleHelp),
        ],
        global: false,
        label: "?",
        help: "this help",
    },
    Shortcut {
        keys: &[(key(NONE, Key::Escape), Command::CloseHelp)],
        global: false,
        label: "Esc",
        help: "close this help",
    },
    Shortcut {
        keys: &[],
        global: false,
        label: "wheel / drag",
        help: "zoom / pan the heatmap (double-click resets)",
    },
];

/// The number key of the `i`-th view of the registry.
fn view_key(i: usize) -> Option<Key> {
    [
        Key::Num1,
        Key::Num2,
        Key::Num3,
        Key::Num4,
        Key::Num5,
        Key::Num6,
        Key::Num7,
        Key::Num8,
        Key::Num9,
    ]
    .get(i)
    .copied()
}

/// The help window's rows: the table, with a row per view after the arrows.
pub fn help_rows() -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    for (i, shortcut) in SHORTCUTS.iter().enumerate() {
        rows.push((shortcut.label.to_string(), shortcut.help.to_string()));
        if i == 1 {
            for (n, v) in VIEWS.iter().enumerate() {
                rows.push(((n + 1).to_string(), v.name().to_lowercase()));
            }
        }
    }
    rows
}

impl HeadwiseApp {
    pub(super) fn shortcuts(&mut self, ctx: &egui::Context) {
        let typing = ctx.egui_wants_keyboard_input();
        for shortcut in SHORTCUTS {
            if typing && !shortcut.global {
                continue;
            }
            for (k, command) in shortcut.keys {
                let pressed = if shortcut.global {
                    ctx.input_mut(|i| i.consume_shortcut(k))
                } else {
                    ctx.input(|i| {
                        (!k.modifiers.shift || i.modifiers.shift) && i.key_pressed(k.logical_key)
                    })
                };
                if pressed {
                    self.run_command(ctx, *command);
                    break;
                }
            }
        }
        if typing {
            return;
        }
        let Some(doc) = self.doc.clone() else { return };
        for (i, v) in VIEWS.iter().enumerate() {
            let pressed = view_key(i).is_some_and(|k| ctx.input(|input| input.key_pressed(k)));
            if pressed && v.available(&doc, self.view.input) {
                self.view.tab = v.tab();
            }
        }
    }

    fn run_command(&mut self, ctx: &egui::Context, command: Command) {
        match command {
            Command::SaveAs => self.save_as(),
            Command::Save => self.save(),
            Command::OpenSession => self.ask_open_session(),
            Command::OpenModelFolder => self.ask_open_model_folder(),
            Command::ExportView => self.export_view_dialog(ctx),
            Command::ExportWindow => self.export_window_dialog(ctx),
            Command::ToggleHelp => self.show_help = !self.show_help,
            Command::CloseHelp => self.show_help = false,
            Command::OpenHeadView => {
                if self.doc.is_some() {
                    self.view.tab = Tab::Head;
                }
            }
            Command::ToggleValueWeighted => self.view.value_weighted = !self.view.value_weighted,
            Command::PreviousHead => self.step(0, -1),
            Command::NextHead => self.step(0, 1),
            Command::PreviousLayer => self.step(-1, 0),
            Command::NextLayer => self.step(1, 0),
        }
    }

    /// Moves the selected head; the extra heads of the token lines belonged to the old one.
    fn step(&mut self, dl: isize, dh: isize) {
        let Some(doc) = &self.doc else { return };
        let before = (self.view.layer, self.view.head);
        self.view.step(dl, dh, doc.layers(), doc.heads());
        if before != (self.view.layer, self.view.head) {
            self.view.line_heads.clear();
        }
    }

    /// The menu label of a view: its name and number key.
    pub(super) fn view_menu_label(tab: Tab) -> String {
        let n = VIEWS.iter().position(|v| v.tab() == tab).unwrap_or(0) + 1;
        format!("{}  ({n})", view(tab).name())
    }
}
