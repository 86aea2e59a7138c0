//! What the app remembers between starts (last model and session, recent files), kept as JSON
//! in headwise's cache directory and written atomically.

use headwise_engine::atomic_file::write_atomically;
use headwise_engine::locate::cache_dir;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const RECENT: usize = 8;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub last_model: Option<String>,
    pub last_session: Option<PathBuf>,
    pub last_prompt: Option<String>,
    pub recent_models: Vec<String>,
    pub recent_sessions: Vec<PathBuf>,
}

fn path() -> PathBuf {
    cache_dir().join("app.json")
}

impl Settings {
    /// The saved settings; defaults when there are none or they can't be read.
    pub fn load() -> Self {
        std::fs::read_to_string(path())
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    pub fn save(&self) -> std::io::Result<()> {
        let path = path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(self)?;
        write_atomically(&path, |tmp| std::fs::write(tmp, &json), |e| e)
    }

    pub fn remember_model(&mut self, spec: &str) {
        self.last_model = Some(spec.to_string());
        self.recent_models.retain(|m| m != spec);
        self.recent_models.insert(0, spec.to_string());
        self.recent_models.truncate(RECENT);
    }

    pub fn remember_session(&mut self, path: &Path) {
        self.last_session = Some(path.to_path_buf());
        self.recent_sessions.retain(|p| p != path);
        self.recent_sessions.insert(0, path.to_path_buf());
        self.recent_sessions.truncate(RECENT);
    }
}
