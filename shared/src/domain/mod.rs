//! Pure types and rules: ids, values that cross a boundary, states.

pub mod duration;
pub mod ids;
pub mod money;
pub mod retry;
pub mod status;
pub mod webhook;

pub use duration::Period;
pub use ids::*;
pub use money::{Amount, Currency};
pub use status::*;
