-- The job engine claims rows straight from `jobs` (no transport window any more): rows that
-- sat in the old transport go back to `queued`.
UPDATE jobs SET status = 'queued' WHERE status = 'enqueued';

-- Claims and lease recovery read only live rows: partial indexes hold just those, so their
-- size and the cost of a claim stay flat however much history the table keeps, and a job
-- finishing (`running` → `done`) adds no entry to them.
DROP INDEX jobs_due;
DROP INDEX jobs_queue_status;
CREATE INDEX jobs_queued ON jobs (queue, run_at) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs (locked_until) WHERE status = 'running';
-- Dashboards list a queue's jobs by status, newest first.
CREATE INDEX jobs_queue_status_updated ON jobs (queue, status, updated_at);

-- Lease renewal extends the attempt locks of the memberships a worker's jobs hold.
CREATE INDEX memberships_attempt_lock_job ON memberships (attempt_lock_job);
