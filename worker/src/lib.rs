//! The worker: the job engine (`engine`), the jobs it runs (`jobs`) and the renewal loop.
//! `hilt worker`, `hilt-worker` and `hilt serve` all start `run`.

pub mod breaker;
pub mod context;
pub mod engine;
pub mod jobs;
pub mod renewal;
pub mod retention;

pub use context::{JobContext, Tuning};
pub use engine::run::{run, run_with};
