//! The views, one file each; each draws from the open document and the saved view state.

pub mod camera;
pub mod grid;
pub mod head;
pub mod image;
pub mod legend;
pub mod lines;
pub mod overview;
pub mod qk;
pub mod state;
