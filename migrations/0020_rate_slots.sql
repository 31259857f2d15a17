-- Provider rate limits shared by every process on the embedded default (without REDIS_URL):
-- one row per limit key (`telegram:bot`, `telegram:chat:{id}`, `discord:route:{bucket}`…).
-- `tat` is the key's theoretical arrival time (GCRA), unix microseconds: the next call at the
-- limit's pace goes at `tat`; bursts may go up to `burst - 1` intervals earlier.
-- `interval_us` and `tolerance_us` are the key's pace and burst as last used, for /ops.
CREATE TABLE rate_slots (
    key             TEXT PRIMARY KEY,
    tat             BIGINT NOT NULL,
    interval_us     BIGINT NOT NULL,
    tolerance_us    BIGINT NOT NULL
);
