//! Job handlers and the runner. `hilt worker`, `hilt-worker` and `hilt serve` all start `run`.

pub mod context;
pub mod jobs;
pub mod relay;
pub mod renewal;
pub mod runner;
pub mod sweeper;

pub use context::{JobContext, Tuning};
pub use runner::{run, run_with};
