//! The subcommands of the command line, one file each, and what they share.

pub mod bench;
pub mod bench_edit;
pub mod bench_project;
pub mod bench_views;
pub mod compare;
pub mod metrics;
pub mod models;
pub mod probe;
pub mod progress;
pub mod project;
pub mod render;
pub mod trace;
