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

CREATE TABLE webhooks (
    id     text PRIMARY KEY,
    record jsonb NOT NULL
);

-- Pending deliveries, read by due time.
CREATE TABLE webhook_outbox (
    id              text PRIMARY KEY,
    webhook_id      text NOT NULL,
    next_attempt_ms bigint NOT NULL,
    record          jsonb NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_ms, id);
CREATE INDEX webhook_outbox_webhook ON webhook_outbox (webhook_id);

-- The attempt log; ids are UUIDv7, so id order is time order.
CREATE TABLE webhook_attempts (
    webhook_id text NOT NULL,
    id         text NOT NULL,
    record     jsonb NOT NULL,
    PRIMARY KEY (webhook_id, id)
);
CREATE INDEX webhook_attempts_age ON webhook_attempts (id);

CREATE TABLE users (
    id       text PRIMARY KEY,
    username text NOT NULL UNIQUE,
    record   jsonb NOT NULL
);

CREATE TABLE api_keys (
    id       text PRIMARY KEY,
    hash     text NOT NULL UNIQUE,
    owner_id text NOT NULL,
    record   jsonb NOT NULL
);
CREATE INDEX api_keys_owner ON api_keys (owner_id);

CREATE TABLE sessions (
    id         text PRIMARY KEY,
    user_id    text NOT NULL,
    expires_ms bigint NOT NULL,
    revoked    boolean NOT NULL,
    record     jsonb NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    hash       text PRIMARY KEY,
    expires_ms bigint NOT NULL,
    used       boolean NOT NULL,
    record     jsonb NOT NULL
);

-- The audit log: an organization's entries by UUIDv7 id (time order).
CREATE TABLE audit (
    org    text NOT NULL,
    id     text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (org, id)
);
CREATE INDEX audit_age ON audit (id);
