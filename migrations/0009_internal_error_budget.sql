-- Runs that failed inside the worker (database error, bug, panic), not at the provider: they
-- have a budget of their own, so a persistent internal error ends in a dead job (and manual
-- review for a delivery) instead of running every few seconds forever.
ALTER TABLE jobs ADD COLUMN internal_errors BIGINT NOT NULL DEFAULT 0;
