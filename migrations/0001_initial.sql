-- Portable DDL: the same file runs on SQLite and PostgreSQL.
-- Timestamps are unix milliseconds (BIGINT), flags are 0/1 (BIGINT), JSON is TEXT.

CREATE TABLE merchants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    api_key_hash    TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL
);

CREATE TABLE products (
    id                  TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL REFERENCES merchants(id),
    name                TEXT NOT NULL,
    platform            TEXT NOT NULL,
    telegram_chat_id    BIGINT,
    discord_guild_id    TEXT,
    discord_role_id     TEXT,
    fallback_invite_url TEXT,
    price_amount        TEXT NOT NULL,
    price_currency      TEXT NOT NULL,
    recurring           BIGINT NOT NULL,
    period_ms           BIGINT,
    grace_period_ms     BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX products_by_merchant ON products (merchant_id, created_at);

CREATE TABLE payments (
    id                          TEXT PRIMARY KEY,
    merchant_id                 TEXT NOT NULL REFERENCES merchants(id),
    product_id                  TEXT NOT NULL REFERENCES products(id),
    amount                      TEXT NOT NULL,
    currency                    TEXT NOT NULL,
    status                      TEXT NOT NULL,
    wallet                      TEXT,
    tx_signature                TEXT,
    buyer_email                 TEXT,
    buyer_telegram_user_id      BIGINT,
    buyer_discord_user_id       TEXT,
    buyer_discord_access_token  TEXT,
    buyer_handle                TEXT,
    metadata                    TEXT,
    membership_id               TEXT,
    receipt_id                  TEXT,
    created_at                  BIGINT NOT NULL,
    confirmed_at                BIGINT
);
CREATE INDEX payments_by_merchant ON payments (merchant_id, created_at);
-- One on-chain transaction pays for one payment.
CREATE UNIQUE INDEX payments_tx_signature ON payments (merchant_id, tx_signature) WHERE tx_signature IS NOT NULL;

CREATE TABLE memberships (
    id                      TEXT PRIMARY KEY,
    merchant_id             TEXT NOT NULL REFERENCES merchants(id),
    product_id              TEXT NOT NULL REFERENCES products(id),
    platform                TEXT NOT NULL,
    -- Who the buyer is: `telegram:<id>`, `discord:<id>`, `wallet:<address>` or `email:<address>`.
    buyer_key               TEXT NOT NULL,
    status                  TEXT NOT NULL,
    wallet                  TEXT,
    email                   TEXT,
    telegram_user_id        BIGINT,
    discord_user_id         TEXT,
    discord_access_token    TEXT,
    handle                  TEXT,
    label                   TEXT,
    current_period_end      BIGINT,
    last_payment_id         TEXT NOT NULL,
    notes                   TEXT,
    delivery_status         TEXT NOT NULL,
    delivery_attempts       BIGINT NOT NULL DEFAULT 0,
    last_attempt_at         BIGINT,
    last_error_code         TEXT,
    last_error_message      TEXT,
    last_error_retryable    BIGINT,
    next_retry_at           BIGINT,
    invite_url              TEXT,
    fallback_used           BIGINT NOT NULL DEFAULT 0,
    delivered_at            BIGINT,
    support_ticket_id       TEXT,
    cancel_at_period_end    BIGINT NOT NULL DEFAULT 0,
    collection_state        TEXT NOT NULL DEFAULT 'paid',
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    UNIQUE (merchant_id, product_id, buyer_key)
);
CREATE INDEX memberships_by_merchant ON memberships (merchant_id, created_at);
CREATE INDEX memberships_due_delivery ON memberships (delivery_status, next_retry_at);
CREATE INDEX memberships_period_end ON memberships (status, current_period_end);

CREATE TABLE delivery_attempts (
    id                  TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL,
    membership_id       TEXT NOT NULL REFERENCES memberships(id),
    payment_id          TEXT,
    number              BIGINT NOT NULL,
    trigger_kind        TEXT NOT NULL,
    provider            TEXT NOT NULL,
    outcome             TEXT,
    error_code          TEXT,
    error_message       TEXT,
    error_retryable     BIGINT,
    request_summary     TEXT,
    response_summary    TEXT,
    worker_id           TEXT NOT NULL,
    started_at          BIGINT NOT NULL,
    finished_at         BIGINT
);
CREATE INDEX delivery_attempts_by_membership ON delivery_attempts (membership_id, number);

CREATE TABLE receipts (
    id                  TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL REFERENCES merchants(id),
    payment_id          TEXT NOT NULL UNIQUE REFERENCES payments(id),
    membership_id       TEXT NOT NULL,
    product_id          TEXT NOT NULL,
    wallet              TEXT,
    tx_signature        TEXT NOT NULL,
    amount              TEXT NOT NULL,
    currency            TEXT NOT NULL,
    issued_at           BIGINT NOT NULL,
    payload             TEXT NOT NULL,
    key_id              TEXT,
    payload_sha256      TEXT NOT NULL,
    signature           TEXT,
    invoice_number      TEXT,
    billing_name        TEXT,
    billing_email       TEXT,
    billing_reference   TEXT,
    invoice_notes       TEXT
);
CREATE INDEX receipts_by_merchant ON receipts (merchant_id, issued_at);

CREATE TABLE support_tickets (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL REFERENCES merchants(id),
    subject         TEXT NOT NULL,
    status          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    priority        TEXT NOT NULL DEFAULT 'normal',
    payment_id      TEXT,
    membership_id   TEXT,
    receipt_id      TEXT,
    product_id      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX support_tickets_by_merchant ON support_tickets (merchant_id, created_at);

CREATE TABLE support_messages (
    id          TEXT PRIMARY KEY,
    ticket_id   TEXT NOT NULL REFERENCES support_tickets(id),
    author      TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX support_messages_by_ticket ON support_messages (ticket_id, created_at);

CREATE TABLE webhook_endpoints (
    id                          TEXT PRIMARY KEY,
    merchant_id                 TEXT NOT NULL REFERENCES merchants(id),
    url                         TEXT NOT NULL,
    events                      TEXT NOT NULL,
    description                 TEXT,
    secret                      TEXT NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  BIGINT,
    disabled_at                 BIGINT,
    created_at                  BIGINT NOT NULL
);

-- What happened, for merchant webhooks and renewal intelligence.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL,
    type            TEXT NOT NULL,
    membership_id   TEXT,
    payment_id      TEXT,
    data            TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX events_by_merchant ON events (merchant_id, created_at);

-- The transactional outbox and job registry: the database is the source of truth,
-- queues are transport. A job row is written in the same transaction as its cause.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    queue           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    merchant_id     TEXT,
    membership_id   TEXT,
    status          TEXT NOT NULL,
    run_at          BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    locked_by       TEXT,
    locked_until    BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_by_membership ON jobs (membership_id);

-- `Idempotency-Key` claims: insert-if-absent, then the first response is replayed for 24 h.
CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    response_status BIGINT,
    response_body   TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);

-- Leases that make periodic work single-run across processes (renewal, sweeper).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
