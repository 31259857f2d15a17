-- Delivery rescue: per-membership attempt lock, job failure count, attempts linked to jobs,
-- paused queues and live workers for operators.

ALTER TABLE memberships ADD COLUMN attempt_lock_job TEXT;
ALTER TABLE memberships ADD COLUMN attempt_lock_until BIGINT;

-- Failed runs of this job so far: the index into HILT_RETRY_SCHEDULE.
ALTER TABLE jobs ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_queue_status ON jobs (queue, status, run_at);

ALTER TABLE delivery_attempts ADD COLUMN job_id TEXT;
ALTER TABLE delivery_attempts ADD COLUMN duration_ms BIGINT;
CREATE INDEX delivery_attempts_by_job ON delivery_attempts (job_id);

CREATE TABLE queue_controls (
    queue       TEXT PRIMARY KEY,
    paused      BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE workers (
    id              TEXT PRIMARY KEY,
    concurrency     BIGINT NOT NULL,
    started_at      BIGINT NOT NULL,
    heartbeat_at    BIGINT NOT NULL,
    stopped_at      BIGINT
);
