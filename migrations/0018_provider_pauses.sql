-- A provider (its bot) paused after a burst of 401/403 answers, shared by every worker: one
-- worker sees the burst, all stop calling. Kept after `paused_until` until a probe call
-- succeeds (or an operator resumes it), so /ops shows why.
CREATE TABLE provider_pauses (
    provider        TEXT PRIMARY KEY,
    paused_until    BIGINT NOT NULL,
    reason          TEXT NOT NULL,
    opened_at       BIGINT NOT NULL,
    opened_by       TEXT NOT NULL
);
