//! `headwise`: the command line (trace, models, bench) over the engine. The desktop window joins
//! it as the default command once the app lands (see the README).

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "headwise",
    version,
    about = "Look inside transformer attention, live."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on text and write every layer's attention, queries and keys to a session file.
    Trace(cli::trace::TraceArgs),
    /// List or fetch the real models headwise knows by name.
    Models {
        #[command(subcommand)]
        command: cli::models::ModelsCommand,
    },
    /// Measure performance; prints JSON.
    Bench {
        #[command(subcommand)]
        command: cli::bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Trace(a)) => cli::trace::run(a),
        Some(Command::Models { command }) => cli::models::run(command),
        Some(Command::Bench { command }) => cli::bench::run(command),
        None => {
            eprintln!(
                "headwise: the desktop window is not built yet; use `headwise trace`, \
                 `headwise models` or `headwise bench` (see `headwise --help`)."
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
