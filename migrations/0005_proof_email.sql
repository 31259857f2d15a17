-- Proof email requests (SPEC §8): one row per `POST /v1/receipt/{id}/send-proof`.
-- Portable DDL: the same file runs on SQLite and PostgreSQL.
--
-- The row is the idempotency record of the email. Its id (`pem_…`) is the Message-ID and the
-- outbox file name. A job claims it with a conditional `queued → sending` update before the
-- message is handed to SMTP, so a job that runs twice sends at most once; see docs/JOBS.md.
CREATE TABLE proof_emails (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL REFERENCES merchants(id),
    receipt_id      TEXT NOT NULL REFERENCES receipts(id),
    address         TEXT NOT NULL,
    -- queued | sending | sent | failed
    status          TEXT NOT NULL,
    -- Send attempts so far (each claim counts one).
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error_code TEXT,
    last_error      TEXT,
    job_id          TEXT,
    -- While `sending`: until when the claiming run may still be talking to the SMTP server.
    sending_until   BIGINT,
    next_attempt_at BIGINT,
    sent_at         BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX proof_emails_by_receipt ON proof_emails (receipt_id, created_at);
