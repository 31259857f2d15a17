-- Renewal reminders are jobs on the `renewal` queue: the row is the reminder's idempotency
-- record (claimed `sending` before the message leaves, like a proof email) and counts attempts.
ALTER TABLE renewal_reminders ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE renewal_reminders ADD COLUMN sending_until BIGINT;
