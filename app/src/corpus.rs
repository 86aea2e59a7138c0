//! Corpora for the query-key view: the default one shipped with the program (the opening of
//! Moby-Dick, assets/corpus/), a text file with one input per line, or a folder of pictures.

use anyhow::{Context, Result, bail};
use headwise_engine::pipeline::{Inputs, images_in, text_lines};
use std::path::{Path, PathBuf};

/// assets/corpus/moby-dick.txt, built into the program so it is there wherever it runs.
pub const DEFAULT_CORPUS: &str = include_str!("../../assets/corpus/moby-dick.txt");
pub const DEFAULT_CORPUS_NAME: &str = "Moby-Dick (default corpus)";

/// The inputs of a corpus: texts for a text model, pictures for an image model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Corpus {
    pub texts: Vec<String>,
    pub images: Vec<PathBuf>,
}

/// Reads a corpus: `None` is the default corpus; a folder gives its pictures, a file its
/// trimmed non-empty lines (as `headwise trace --corpus` reads it). At most `limit` inputs.
pub fn read(path: Option<&Path>, limit: usize) -> Result<Corpus> {
    let corpus = match path {
        None => Corpus {
            texts: text_lines(DEFAULT_CORPUS, limit),
            images: Vec::new(),
        },
        Some(p) if p.is_dir() => Corpus {
            texts: Vec::new(),
            images: images_in(p)?.into_iter().take(limit).collect(),
        },
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the corpus {}", p.display()))?;
            let texts = text_lines(&text, limit);
            if texts.is_empty() {
                bail!(
                    "{}: no inputs (the file has no non-empty lines)",
                    p.display()
                );
            }
            Corpus {
                texts,
                images: Vec::new(),
            }
        }
    };
    Ok(corpus)
}

impl Corpus {
    /// What a run of this corpus takes: its pictures for an image model, else its texts.
    pub fn inputs(self, takes_images: bool) -> Inputs {
        if takes_images {
            Inputs::Images(self.images)
        } else {
            Inputs::Texts(self.texts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_corpus_has_at_least_two_thousand_sentences() {
        assert!(text_lines(DEFAULT_CORPUS, usize::MAX).len() >= 2000);
        assert_eq!(text_lines(DEFAULT_CORPUS, 5)[0], "Call me Ishmael.");
    }
}
