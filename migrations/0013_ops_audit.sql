-- Every operations action (pause, resume, retry, discard), from the dashboard or the API:
-- who (a fingerprint of the admin credential), when, what, and from where.
CREATE TABLE ops_audit (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    source      TEXT NOT NULL
);
CREATE INDEX ops_audit_by_time ON ops_audit (at);
