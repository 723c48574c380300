//! heraldd: a status-publish node of a Herald cluster.
//!
//! See ARCHITECTURE.md for the bird's-eye view. Entry point: [`app::run`].

// The gRPC handlers' futures nest deeply (tonic service → Api → RaftNode::read
// → read barrier → peer RPC); rustc's default layout depth (128) is just short.
#![recursion_limit = "256"]

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod feed;
pub mod gateway;
pub mod listener;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod peer_tls;
pub mod profile;
pub mod raft;
pub mod serve;
pub mod time;
pub mod tls;
