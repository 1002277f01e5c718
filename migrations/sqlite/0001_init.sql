-- Flywheel schema, SQLite dialect. Keep in step with ../postgres/0001_init.sql.
-- STRICT tables, so a value of the wrong type is refused, as Postgres would.
-- UUIDs are 16-byte BLOBs (compared bytewise: UUID v7 order is creation order); JSON is TEXT;
-- times are TEXT in one fixed-width UTC form, 'YYYY-MM-DDTHH:MM:SS.ffffffZ', so text order is time
-- order (see store/src/timestamp.rs).

CREATE TABLE groups (
    id                BLOB NOT NULL PRIMARY KEY,
    kind              TEXT NOT NULL CHECK (kind IN ('samples', 'variants')),
    endpoint          TEXT NOT NULL CHECK (endpoint IN ('chat', 'completion')),
    model             TEXT NOT NULL,
    adapter_version   INTEGER NOT NULL,
    prompt            TEXT NOT NULL,
    params            TEXT NOT NULL,
    seed              INTEGER,
    user_id           TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    created_at        TEXT NOT NULL
) STRICT;

CREATE INDEX groups_adapter_version_id ON groups (adapter_version, id);
CREATE INDEX groups_created_at ON groups (created_at);

CREATE TABLE responses (
    id                BLOB NOT NULL PRIMARY KEY,
    group_id          BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    idx               INTEGER NOT NULL,
    prompt            TEXT,
    text              TEXT NOT NULL,
    token_ids         TEXT NOT NULL,
    logprobs          TEXT NOT NULL,
    finish_reason     TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL,
    adapter_version   INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    created_at        TEXT NOT NULL,
    UNIQUE (group_id, idx)
) STRICT;

CREATE TABLE adapters (
    version        INTEGER NOT NULL PRIMARY KEY,
    parent_version INTEGER REFERENCES adapters (version),
    algorithm      TEXT NOT NULL,
    train_run_id   BLOB,
    path           TEXT,
    sha256         TEXT,
    status         TEXT NOT NULL
                   CHECK (status IN ('training', 'ready', 'active', 'retired', 'failed')),
    error          TEXT,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    activated_at   TEXT
) STRICT;

-- Replicas follow the one active version; activation retires the old one first.
CREATE UNIQUE INDEX adapters_one_active ON adapters (status) WHERE status = 'active';

-- Version 0 is the base model, served until an adapter is activated.
INSERT INTO adapters (version, algorithm, status, activated_at)
VALUES (0, 'base', 'active', strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z');

CREATE TABLE api_keys (
    id         BLOB NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    revoked_at TEXT
) STRICT;
