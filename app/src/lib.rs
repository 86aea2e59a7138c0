//! headwise, the program: the desktop window (gui), its views and renderer, and the command
//! line. A library as well as a binary so that the end-to-end tests can decode rendered
//! pixels with the very colour maps the shaders use.

pub mod allocator;
pub mod caches;
pub mod cli;
pub mod corpus;
pub mod document;
pub mod gui;
pub mod jobs;
pub mod model_source;
pub mod projections;
pub mod render;
pub mod views;
