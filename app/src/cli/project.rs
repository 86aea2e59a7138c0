//! `headwise project`: adds joint query-key projections (PCA, UMAP or t-SNE) of a session's
//! corpus to the session, as `proj/{method}/{layer}/{head}`.

use super::progress::fraction_bar;
use anyhow::{Context, Result, bail};
use clap::Args;
use headwise_engine::analysis::projection::{Method, Work, project_session};
use headwise_engine::device::{Device, DeviceChoice, create_device};
use headwise_engine::session::Session;
use std::path::PathBuf;

#[derive(Args)]
pub struct ProjectArgs {
    /// The session whose inputs form the corpus.
    pub session: PathBuf,
    #[command(flatten)]
    pub layout: LayoutChoice,
    /// Where to write the session with its projections (may be the input file).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Which layout of which heads: what `headwise project` and `headwise bench project` ask.
#[derive(Args)]
pub struct LayoutChoice {
    /// pca, umap or tsne.
    #[arg(long, default_value = "pca")]
    pub method: Method,
    /// 2 or 3.
    #[arg(long, default_value_t = 2)]
    pub dims: usize,
    /// Heads as LAYER.HEAD, comma-separated (default: every head).
    #[arg(long, value_delimiter = ',')]
    pub heads: Vec<String>,
    /// UMAP's random seed: the same seed gives the same layout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl LayoutChoice {
    /// The heads asked for (empty: every head), once the dimensions are checked.
    pub fn checked_heads(&self) -> Result<Vec<(usize, usize)>> {
        if !(2..=3).contains(&self.dims) {
            bail!("--dims {}: 2 or 3", self.dims);
        }
        self.heads.iter().map(|s| parse_head(s)).collect()
    }

    /// How many heads are laid out in `session`.
    pub fn head_count(&self, session: &Session) -> usize {
        match self.heads.len() {
            0 => session.meta.model.layers * session.meta.model.heads,
            n => n,
        }
    }

    /// Lays out `heads` of `session` on `device`.
    pub fn project(
        &self,
        session: &mut Session,
        heads: &[(usize, usize)],
        device: &Device,
        work: &Work,
    ) -> headwise_engine::Result<()> {
        project_session(
            session,
            self.method,
            self.dims,
            self.seed,
            heads,
            device,
            work,
        )
    }
}

/// `L.H` → (L, H).
pub fn parse_head(spec: &str) -> Result<(usize, usize)> {
    let (l, h) = spec
        .split_once('.')
        .with_context(|| format!("--heads {spec}: expected LAYER.HEAD, e.g. 3.5"))?;
    let layer = l
        .trim()
        .parse()
        .with_context(|| format!("--heads {spec}: '{l}' is not a layer number"))?;
    let head = h
        .trim()
        .parse()
        .with_context(|| format!("--heads {spec}: '{h}' is not a head number"))?;
    Ok((layer, head))
}

pub fn run(args: ProjectArgs) -> Result<()> {
    let layout = &args.layout;
    let heads = layout.checked_heads()?;
    let mut session = Session::open(&args.session)?;
    let device = create_device(args.device)?;
    let count = layout.head_count(&session);
    let bar = fraction_bar(format!(
        "{} of {count} head(s), {} points each",
        layout.method.label(),
        2 * session.corpus_tokens()
    ));
    let progress = |f: f32| bar.set_position((f * 1000.0) as u64);
    let started = std::time::Instant::now();
    let result = layout.project(
        &mut session,
        &heads,
        &device.device,
        &Work::new(&progress, None),
    );
    bar.finish_and_clear();
    result.with_context(|| format!("projecting {}", args.session.display()))?;
    let dtype = session.dtype;
    session.save(&args.out, dtype)?;
    eprintln!(
        "{} of {count} head(s) in {:.2} s; wrote {} ({})",
        layout.method.label(),
        started.elapsed().as_secs_f64(),
        args.out.display(),
        device.description
    );
    Ok(())
}
