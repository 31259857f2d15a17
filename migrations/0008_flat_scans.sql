-- A job moving queued → running → done used to add an entry to `jobs_queue_status_updated` in
-- every state. Dashboards now read each state through its own partial index, so a job adds one
-- entry when it finishes and none while it is claimed and run (the engine's hot path).
DROP INDEX jobs_queue_status_updated;
CREATE INDEX jobs_done ON jobs (queue, updated_at) WHERE status = 'done';
CREATE INDEX jobs_dead ON jobs (queue, updated_at) WHERE status = 'dead';
CREATE INDEX jobs_discarded ON jobs (queue, updated_at) WHERE status = 'discarded';

-- Jobs without a membership (webhooks, proof emails, no-op) need no entry here.
DROP INDEX jobs_by_membership;
CREATE INDEX jobs_by_membership ON jobs (membership_id) WHERE membership_id IS NOT NULL;

-- The sweeper's backstop scan for owed deliveries that no job holds reads owed memberships a
-- page at a time in `(updated_at, id)` order, instead of anti-joining every owed membership
-- with the jobs table on each pass (40 s per pass with 100,000 deliveries owed).
CREATE INDEX memberships_owed ON memberships (updated_at, id) WHERE delivery_status IN ('pending', 'failed');
