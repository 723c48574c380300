//! heraldd: a status-publish node of a Herald cluster.
//!
//! See ARCHITECTURE.md for the bird's-eye view. Entry point: [`app::run`].

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod gateway;
pub mod media;
pub mod metrics;
pub mod raft;
pub mod time;
pub mod tls;
