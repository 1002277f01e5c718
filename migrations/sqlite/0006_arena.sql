-- The arena: adapters enter as `candidate`, duels (kind `duel`) pit a candidate against the
-- incumbent on held-out evaluation prompts, and every promotion or retirement is recorded with its
-- evidence. Keep in step with ../postgres/0006_arena.sql.
--
-- SQLite cannot change a CHECK constraint in place, so `groups` and `adapters` are rebuilt (the
-- documented twelve steps, sqlite.org/lang_altertable.html#otheralter). That needs foreign keys
-- off, or dropping an old table would first delete its rows, cascading to the rows that reference
-- them. A transaction cannot switch them, and sqlx runs every SQLite migration in one (it ignores
-- `-- no-transaction` for SQLite), so `Store::migrate` turns them off around the migrations
-- (store/src/connect.rs).

CREATE TABLE groups_next (
    id                BLOB NOT NULL PRIMARY KEY,
    kind              TEXT NOT NULL CHECK (kind IN ('samples', 'variants', 'duel')),
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
    created_at        TEXT NOT NULL,
    prompt_token_ids  TEXT
) STRICT;

INSERT INTO groups_next (id, kind, endpoint, model, adapter_version, prompt, params, seed, user_id,
    prompt_tokens, completion_tokens, latency_ms, created_at, prompt_token_ids)
SELECT id, kind, endpoint, model, adapter_version, prompt, params, seed, user_id, prompt_tokens,
    completion_tokens, latency_ms, created_at, prompt_token_ids FROM groups;

DROP TABLE groups;
ALTER TABLE groups_next RENAME TO groups;
CREATE INDEX groups_adapter_version_id ON groups (adapter_version, id);
CREATE INDEX groups_created_at ON groups (created_at);

CREATE TABLE adapters_next (
    version        INTEGER NOT NULL PRIMARY KEY,
    parent_version INTEGER REFERENCES adapters (version),
    algorithm      TEXT NOT NULL,
    train_run_id   BLOB,
    path           TEXT,
    sha256         TEXT,
    status         TEXT NOT NULL
                   CHECK (status IN ('training', 'ready', 'candidate', 'active', 'retired', 'failed')),
    error          TEXT,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    activated_at   TEXT,
    note           TEXT,
    -- A vLLM-style LoRA name (`POST /v1/load_lora_adapter`); see adapters_live_name.
    name           TEXT
) STRICT;

INSERT INTO adapters_next (version, parent_version, algorithm, train_run_id, path, sha256, status,
    error, created_at, activated_at, note)
SELECT version, parent_version, algorithm, train_run_id, path, sha256, status, error, created_at,
    activated_at, note FROM adapters;

DROP TABLE adapters;
ALTER TABLE adapters_next RENAME TO adapters;
CREATE UNIQUE INDEX adapters_one_active ON adapters (status) WHERE status = 'active';
-- A name belongs to one live adapter at a time; retired and failed ones keep theirs as history, so
-- a name can be loaded again after it was unloaded (as vLLM tooling does).
CREATE UNIQUE INDEX adapters_live_name ON adapters (name)
    WHERE status IN ('training', 'ready', 'candidate', 'active');

-- A duel: one group of two responses to one evaluation prompt, the candidate's (idx 0) and the
-- incumbent's (idx 1), sampled with the same parameters and seed. `round` numbers the passes over
-- the prompt set, each with its own seed; the unique key lets concurrent replicas race safely.
CREATE TABLE duels (
    group_id          BLOB NOT NULL PRIMARY KEY REFERENCES groups (id) ON DELETE CASCADE,
    candidate_version INTEGER NOT NULL REFERENCES adapters (version),
    incumbent_version INTEGER NOT NULL REFERENCES adapters (version),
    eval_prompt_id    BLOB NOT NULL REFERENCES eval_prompts (id),
    round             INTEGER NOT NULL CHECK (round >= 0),
    UNIQUE (candidate_version, incumbent_version, eval_prompt_id, round)
) STRICT;

-- Every promotion or retirement of a candidate, with what it rested on.
CREATE TABLE adapter_decisions (
    id                BLOB NOT NULL PRIMARY KEY,
    version           INTEGER NOT NULL REFERENCES adapters (version),
    -- The active version when it was decided.
    incumbent_version INTEGER NOT NULL,
    action            TEXT NOT NULL CHECK (action IN ('promote', 'retire')),
    decided_by        TEXT NOT NULL CHECK (decided_by IN ('gate', 'admin', 'always')),
    rule              TEXT NOT NULL,
    judgments         INTEGER NOT NULL,
    wins              REAL NOT NULL,
    both_bad          INTEGER NOT NULL,
    probability       REAL,
    lower_bound       REAL,
    upper_bound       REAL,
    confidence        REAL,
    reason            TEXT,
    created_at        TEXT NOT NULL
) STRICT;

CREATE INDEX adapter_decisions_version ON adapter_decisions (version, created_at);
