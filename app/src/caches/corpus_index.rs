//! Each of the session's N corpus tokens as (input, token), and each input's first corpus
//! index: how the query-key view finds the token behind a point.

use headwise_engine::session::Session;
use std::sync::{Arc, OnceLock};

pub struct CorpusIndex {
    pub tokens: Vec<(u32, u32)>,
    pub starts: Vec<usize>,
}

#[derive(Default)]
pub struct CorpusIndexCache {
    index: OnceLock<Arc<CorpusIndex>>,
}

impl CorpusIndexCache {
    pub fn get(&self, session: &Session) -> Arc<CorpusIndex> {
        self.index
            .get_or_init(|| {
                let mut tokens = Vec::new();
                let mut starts = Vec::new();
                for (i, input) in session.meta.inputs.iter().enumerate() {
                    starts.push(tokens.len());
                    tokens.extend((0..input.tokens.len() as u32).map(|t| (i as u32, t)));
                }
                Arc::new(CorpusIndex { tokens, starts })
            })
            .clone()
    }
}
