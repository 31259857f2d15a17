-- Per queue and minute, what each worker's runs came to: the /ops graphs (finished and failed
-- per minute, run time percentiles) read this, so they count every worker and every outcome.
-- One row per worker, so workers never write the same row.
CREATE TABLE job_minutes (
    queue       TEXT NOT NULL,
    minute      BIGINT NOT NULL,
    worker_id   TEXT NOT NULL,
    done        BIGINT NOT NULL,
    failed      BIGINT NOT NULL,
    dead        BIGINT NOT NULL,
    run_ms      TEXT NOT NULL,
    PRIMARY KEY (queue, minute, worker_id)
);
CREATE INDEX job_minutes_by_minute ON job_minutes (minute);
