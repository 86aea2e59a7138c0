//! `headwise`: the desktop window by default (optionally opening a session), and the headless
//! command line: trace, render, metrics, probe, project, models, bench.

use clap::{Parser, Subcommand};
use headwise::cli;
use headwise::gui::{self, app::StartOptions};
use headwise_engine::device::DeviceChoice;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "headwise",
    version,
    about = "Look inside transformer attention, live.",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A session file to open in the window.
    session: Option<PathBuf>,
    /// The model to open in the window (a folder, .gguf, fetched name or repo id).
    #[arg(long)]
    model: Option<String>,
    /// A picture to run an image model on (PNG, JPEG or WebP).
    #[arg(long)]
    image: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Save a screenshot of the window here once it shows a session, then quit.
    #[arg(long, hide = true)]
    screenshot: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on text and write every layer's attention, queries and keys to a session file.
    Trace(cli::trace::TraceArgs),
    /// Draw a view of a session into a PNG, offscreen, with the window's own shaders.
    Render(cli::render::RenderArgs),
    /// List or fetch the real models headwise knows by name.
    Models {
        #[command(subcommand)]
        command: cli::models::ModelsCommand,
    },
    /// Every head's metrics and scores (sink share, secondary sinks, dormancy, streaming,
    /// retrieval ...), each input's sink rate; optionally as JSON.
    Metrics(cli::metrics::MetricsArgs),
    /// Probes that score heads: `retrieval` (needle in a haystack).
    Probe {
        #[command(subcommand)]
        command: cli::probe::ProbeCommand,
    },
    /// Two models of the same shape on the same texts in one session: the second model's runs
    /// compared with the first's (each head's change, the head view's difference, the
    /// next-token KL).
    Compare(cli::compare::CompareArgs),
    /// Add joint query-key projections (PCA, UMAP, t-SNE) of a session's corpus to it.
    Project(cli::project::ProjectArgs),
    /// Measure performance; prints JSON.
    Bench {
        #[command(subcommand)]
        command: cli::bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    headwise::allocator::keep_freed_memory();
    let args = Args::parse();
    if args.command.is_some() {
        quiet_headless_vulkan();
    }
    let result = match args.command {
        Some(Command::Trace(a)) => cli::trace::run(a),
        Some(Command::Render(a)) => cli::render::run(a),
        Some(Command::Project(a)) => cli::project::run(a),
        Some(Command::Compare(a)) => cli::compare::run(a),
        Some(Command::Metrics(a)) => cli::metrics::run(a),
        Some(Command::Probe { command }) => cli::probe::run(command),
        Some(Command::Models { command }) => cli::models::run(command),
        Some(Command::Bench { command }) => cli::bench::run(command),
        None => gui::run(StartOptions {
            session: args.session,
            model: args.model,
            image: args.image,
            device: args.device,
            screenshot: args.screenshot,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Mesa's implicit Vulkan layer that picks the GPU driving the display asks the display server
/// while wgpu lists adapters, and without a display session libwayland prints "error:
/// XDG_RUNTIME_DIR is invalid or not set" for each driver. A command without a window has no
/// display to match and headwise picks its adapter itself, so the layer is switched off (its
/// documented switch), unless the user set it.
fn quiet_headless_vulkan() {
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: called first thing in main, before any thread exists that could read the
        // environment at the same time.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
