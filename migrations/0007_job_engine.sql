-- The job engine claims rows straight from `jobs` (no transport window any more): rows that
-- sat in the old transport go back to `queued`; per-worker lease renewal and the membership
-- attempt lock renewed with it need their own indexes.
UPDATE jobs SET status = 'queued' WHERE status = 'enqueued';
CREATE INDEX jobs_locked_by ON jobs (locked_by);
CREATE INDEX memberships_attempt_lock_job ON memberships (attempt_lock_job);
