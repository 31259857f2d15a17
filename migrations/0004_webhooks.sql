-- Merchant webhooks (SPEC §8): endpoint lifecycle, one row per delivery attempt, and the
-- per-membership event order the fan-out relies on.

-- Deleted endpoints are kept (their attempts reference them) but never listed or sent to.
ALTER TABLE webhook_endpoints ADD COLUMN deleted_at BIGINT;
-- Why sending stopped, e.g. `gone` when the receiver answered 410.
ALTER TABLE webhook_endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE webhook_endpoints ADD COLUMN updated_at BIGINT;
CREATE INDEX webhook_endpoints_by_merchant ON webhook_endpoints (merchant_id, created_at);

-- Events of one membership get strictly increasing created_at; webhooks carry it as the order.
CREATE INDEX events_by_membership ON events (membership_id, created_at);

-- One row per attempt to send one event to one endpoint.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id),
    event_id        TEXT NOT NULL REFERENCES events(id),
    event_type      TEXT NOT NULL,
    job_id          TEXT,
    -- 1 for the first attempt to send this event to this endpoint, then 2, 3, …
    attempt         BIGINT NOT NULL,
    trigger_kind    TEXT NOT NULL,
    -- `succeeded`; `failed` (another attempt at next_attempt_at); `dead` (no more attempts).
    status          TEXT NOT NULL,
    http_status     BIGINT,
    latency_ms      BIGINT NOT NULL,
    error           TEXT,
    next_attempt_at BIGINT,
    worker_id       TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, started_at);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (endpoint_id, event_id, attempt);
