-- Flywheel schema, Postgres dialect. Keep in step with ../sqlite/0001_init.sql.
-- Ids are UUID v7 made by the caller, so `ORDER BY id` is creation order.

CREATE TABLE groups (
    id                UUID PRIMARY KEY,
    kind              TEXT NOT NULL CHECK (kind IN ('samples', 'variants')),
    endpoint          TEXT NOT NULL CHECK (endpoint IN ('chat', 'completion')),
    model             TEXT NOT NULL,
    adapter_version   BIGINT NOT NULL,
    prompt            JSONB NOT NULL,
    params            JSONB NOT NULL,
    seed              BIGINT,
    user_id           TEXT,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    latency_ms        BIGINT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL
);

CREATE INDEX groups_adapter_version_id ON groups (adapter_version, id);
CREATE INDEX groups_created_at ON groups (created_at);

CREATE TABLE responses (
    id                UUID PRIMARY KEY,
    group_id          UUID NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    idx               INTEGER NOT NULL,
    prompt            JSONB,
    text              TEXT NOT NULL,
    token_ids         JSONB NOT NULL,
    logprobs          JSONB NOT NULL,
    finish_reason     TEXT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    adapter_version   BIGINT NOT NULL,
    latency_ms        BIGINT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (group_id, idx)
);

CREATE TABLE adapters (
    version        BIGINT PRIMARY KEY,
    parent_version BIGINT REFERENCES adapters (version),
    algorithm      TEXT NOT NULL,
    train_run_id   UUID,
    path           TEXT,
    sha256         TEXT,
    status         TEXT NOT NULL
                   CHECK (status IN ('training', 'ready', 'active', 'retired', 'failed')),
    error          TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    activated_at   TIMESTAMPTZ
);

-- Replicas follow the one active version; activation retires the old one first.
CREATE UNIQUE INDEX adapters_one_active ON adapters (status) WHERE status = 'active';

-- Version 0 is the base model, served until an adapter is activated.
INSERT INTO adapters (version, algorithm, status, activated_at) VALUES (0, 'base', 'active', now());

CREATE TABLE api_keys (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
