//! Everything the API and the workers both need, and nothing about HTTP.

pub mod clock;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod providers;
pub mod ratelimit;
pub mod queue;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod signing;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod views;
