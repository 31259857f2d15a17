-- Rows pruned after HILT_RETENTION, by table, since the database was created: `/metrics`
-- reports them as counters (`hilt_pruned_rows_total`), whichever worker pruned them.
CREATE TABLE pruned_rows (
    table_name  TEXT PRIMARY KEY,
    total       BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- An event is pruned only once no webhook delivery points at it.
CREATE INDEX webhook_deliveries_by_event_id ON webhook_deliveries (event_id);
