-- Renewals (SPEC §8): reminders sent once per (membership, period end, offset), and indexes for
-- the renewal job's scans and renewal intelligence.

-- One row per reminder threshold of one paid period. The row is claimed (status `sending`)
-- and committed before the message goes out, so a reminder is never sent twice, even when a
-- run dies mid-send; the outcome is written after the send.
CREATE TABLE renewal_reminders (
    membership_id   TEXT NOT NULL,
    period_end      BIGINT NOT NULL,
    offset_ms       BIGINT NOT NULL,
    merchant_id     TEXT NOT NULL,
    -- `sending` | `sent` | `failed` | `skipped` (superseded by a later threshold, or no channel)
    status          TEXT NOT NULL,
    -- `telegram` | `email` | `none`
    channel         TEXT NOT NULL,
    error_code      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    PRIMARY KEY (membership_id, period_end, offset_ms)
);

-- Renewal intelligence reads events by merchant and type over a time window.
CREATE INDEX events_by_type ON events (merchant_id, type, created_at);
