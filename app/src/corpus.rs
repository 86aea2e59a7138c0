//! Corpora for the query-key view: the default one shipped with the program (the opening of
//! Moby-Dick, assets/corpus/), a text file with one input per line, or a folder of pictures.

use anyhow::{Context, Result, bail};
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

/// Non-empty lines of a text, at most `limit`.
pub fn lines(text: &str, limit: usize) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(limit)
        .map(str::to_string)
        .collect()
}

/// The pictures in a folder, sorted by name.
pub fn images_in(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["png", "jpg", "jpeg", "webp"].contains(&e.to_ascii_lowercase().as_str())
            })
        })
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("{}: no PNG, JPEG or WebP images", folder.display());
    }
    Ok(found)
}

/// Reads a corpus: `None` is the default corpus; a folder gives its pictures, a file its
/// lines. At most `limit` inputs.
pub fn read(path: Option<&Path>, limit: usize) -> Result<Corpus> {
    let corpus = match path {
        None => Corpus {
            texts: lines(DEFAULT_CORPUS, limit),
            images: Vec::new(),
        },
        Some(p) if p.is_dir() => Corpus {
            texts: Vec::new(),
            images: images_in(p)?.into_iter().take(limit).collect(),
        },
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the corpus {}", p.display()))?;
            let texts = lines(&text, limit);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_corpus_has_at_least_two_thousand_sentences() {
        assert!(lines(DEFAULT_CORPUS, usize::MAX).len() >= 2000);
        assert_eq!(lines(DEFAULT_CORPUS, 5)[0], "Call me Ishmael.");
    }

    #[test]
    fn blank_lines_are_skipped_and_the_limit_holds() {
        assert_eq!(lines("a\n\n  \nb\nc\n", 2), ["a", "b"]);
    }
}
