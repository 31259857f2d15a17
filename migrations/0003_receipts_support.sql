-- Receipts anyone can verify, and the support trail.
-- Portable DDL: the same file runs on SQLite and PostgreSQL.

-- Public halves of every receipt signing key, by key_id (the RFC 7638 JWK thumbprint). A process
-- registers its signing key here at start; a key stays published after rotation, so receipts it
-- signed keep verifying and `GET /.well-known/hilt-receipt-keys` lists every key of every process.
CREATE TABLE receipt_keys (
    key_id      TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    -- Raw 32-byte Ed25519 public key, base64url without padding (the JWK `x`).
    public_key  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Messages of one ticket in the order they were written, even within one millisecond.
ALTER TABLE support_messages ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX support_messages_by_ticket_seq ON support_messages (ticket_id, seq);
CREATE INDEX support_tickets_by_membership ON support_tickets (membership_id);
CREATE INDEX receipts_by_merchant_wallet ON receipts (merchant_id, wallet);
