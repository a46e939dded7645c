-- Records are kept as the JSON the sled store keeps (serde of the same
-- types), with the columns lookups, uniqueness and ordering need beside it.

CREATE TABLE orgs (
    id     text PRIMARY KEY,
    name   text NOT NULL UNIQUE,
    record jsonb NOT NULL
);

CREATE TABLE schedules (
    id     text PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint text NOT NULL,
    claimed_ms  bigint NOT NULL,
    -- NULL while the request runs; then the response kept for replays.
    response    jsonb
);
CREATE INDEX idempotency_keys_claimed ON idempotency_keys (claimed_ms);
