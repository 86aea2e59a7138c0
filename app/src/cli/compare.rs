//! `headwise compare`: two models of the same shape on the same texts (a base checkpoint and its
//! fine-tune), one session: the second model's runs follow the first's, each compared with the
//! first model's run of the same tokens.

use anyhow::{Context, Result};
use clap::Args;
use headwise_engine::session::{Session, StoreDtype};
use std::path::PathBuf;

#[derive(Args)]
pub struct CompareArgs {
    /// The first model's session (`headwise trace`): the runs compared against.
    pub first: PathBuf,
    /// The second model's session over the same texts.
    pub second: PathBuf,
    /// Where to write the combined session.
    #[arg(long)]
    pub out: PathBuf,
    /// Precision of the stored tensors.
    #[arg(long, default_value = "f32")]
    pub dtype: StoreDtype,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let mut first = Session::open(&args.first)?;
    let second = Session::open(&args.second)?;
    let before = first.meta.inputs.len();
    first
        .append_runs_of(second, &args.second)
        .with_context(|| {
            format!(
                "comparing {} with {}",
                args.second.display(),
                args.first.display()
            )
        })?;
    first.save(&args.out, args.dtype)?;
    eprintln!(
        "wrote {}: inputs {}..{} are {}'s runs, each compared with the first model's",
        args.out.display(),
        before,
        first.meta.inputs.len(),
        first.meta.inputs[before]
            .model
            .as_deref()
            .unwrap_or("the second model")
    );
    Ok(())
}
