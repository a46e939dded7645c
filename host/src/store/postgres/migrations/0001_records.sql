-- Records are kept as the JSON the sled store keeps (serde of the same
-- types), with the columns lookups, uniqueness and ordering need beside it.
-- `json`, not `jsonb`, wherever a record holds a user's JSON (a result,
-- metadata, a stored response): jsonb would reorder its keys. The records
-- changed in place by SQL (sessions, refresh tokens) and the audit log are
-- `jsonb`.

CREATE TABLE orgs (
    id     text COLLATE "C" PRIMARY KEY,
    name   text NOT NULL UNIQUE,
    record json NOT NULL
);

CREATE TABLE schedules (
    id     text COLLATE "C" PRIMARY KEY,
    record json NOT NULL
);

CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint text NOT NULL,
    claimed_ms  bigint NOT NULL,
    -- NULL while the request runs; then the response kept for replays.
    response    json
);
CREATE INDEX idempotency_keys_claimed ON idempotency_keys (claimed_ms);

CREATE TABLE webhooks (
    id     text COLLATE "C" PRIMARY KEY,
    record json NOT NULL
);

-- Pending deliveries, read by due time.
CREATE TABLE webhook_outbox (
    id              text COLLATE "C" PRIMARY KEY,
    webhook_id      text NOT NULL,
    next_attempt_ms bigint NOT NULL,
    record          json NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_ms, id);
CREATE INDEX webhook_outbox_webhook ON webhook_outbox (webhook_id);

-- The attempt log; ids are UUIDv7, so id order is time order.
CREATE TABLE webhook_attempts (
    webhook_id text NOT NULL,
    id         text COLLATE "C" NOT NULL,
    record     json NOT NULL,
    PRIMARY KEY (webhook_id, id)
);
CREATE INDEX webhook_attempts_age ON webhook_attempts (id);

CREATE TABLE users (
    id       text COLLATE "C" PRIMARY KEY,
    username text NOT NULL UNIQUE,
    record   json NOT NULL
);

CREATE TABLE api_keys (
    id       text COLLATE "C" PRIMARY KEY,
    hash     text NOT NULL UNIQUE,
    owner_id text NOT NULL,
    record   json NOT NULL
);
CREATE INDEX api_keys_owner ON api_keys (owner_id);

CREATE TABLE sessions (
    id         text COLLATE "C" PRIMARY KEY,
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
    id     text COLLATE "C" NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (org, id)
);
CREATE INDEX audit_age ON audit (id);

-- Scripts: a name is unique within its organization (`org` is the
-- organization's id, `default` included).
-- Its runs are counted in columns of their own, by one statement per run
-- on any node, and read into the record's fields of the same names.
CREATE TABLE scripts (
    id               text COLLATE "C" PRIMARY KEY,
    org              text NOT NULL,
    name             text NOT NULL,
    record           json NOT NULL,
    execution_count  bigint NOT NULL DEFAULT 0,
    last_executed_at text,
    UNIQUE (org, name)
);

-- Every kept version's content and its record.
CREATE TABLE script_versions (
    script_id text NOT NULL,
    version   bigint NOT NULL,
    content   bytea NOT NULL,
    record    json NOT NULL,
    PRIMARY KEY (script_id, version)
);

-- A script's key-value store; keys in byte order.
CREATE TABLE script_kv (
    script_id text NOT NULL,
    key       text COLLATE "C" NOT NULL,
    value     bytea NOT NULL,
    PRIMARY KEY (script_id, key)
);

CREATE TABLE script_config (
    script_id text PRIMARY KEY,
    "values"  json NOT NULL
);

-- By `<org>/<name>` (just the name in the default organization).
CREATE TABLE shared_secrets (
    key    text COLLATE "C" PRIMARY KEY,
    record json NOT NULL
);

-- Executions by UUIDv7 id (creation order), with one index per walk:
-- `script_slot` is the script's id, '' for the default organization's
-- ad-hoc runs and `~<org>` for another's.
-- A running execution's `node` holds it under a lease until `lease_ms`
-- (the database's clock), renewed while the node lives; past it, any node
-- ends it INTERRUPTED.
CREATE TABLE executions (
    id          text COLLATE "C" PRIMARY KEY,
    org         text NOT NULL,
    script_slot text NOT NULL,
    status      text NOT NULL,
    node        text,
    lease_ms    bigint,
    record      json NOT NULL
);
CREATE INDEX executions_leases ON executions (lease_ms) WHERE status = 'running';
CREATE INDEX executions_script ON executions (script_slot, id);
CREATE INDEX executions_status ON executions (status, id);
CREATE INDEX executions_org ON executions (org, id);

-- Usage rollups (`store/pending_usage.rs`): `kind` is the grain and
-- whether the row is one script's; '' is no script (totals, ad-hoc runs).
CREATE TABLE usage_rollups (
    kind   "char" NOT NULL,
    bucket text COLLATE "C" NOT NULL,
    org    text NOT NULL,
    script text NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (kind, bucket, org, script)
);
