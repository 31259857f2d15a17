//! The no-op job: does nothing, so the bench measures the engine alone (claim, run, complete).

use hilt_shared::{queue::Queue, storage::jobs::JobRow};

use crate::{
    JobContext,
    engine::{Job, Outcome},
};

pub struct Noop;

impl Job for Noop {
    const QUEUE: Queue = Queue::Noop;
    type Payload = serde_json::Value;

    async fn run(_: &JobContext, _: &JobRow, _: Self::Payload) -> anyhow::Result<Outcome> {
        Ok(Outcome::done())
    }
}
