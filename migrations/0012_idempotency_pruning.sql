-- `Idempotency-Key` claims are kept 24 h; the retention pass deletes older ones by age.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
