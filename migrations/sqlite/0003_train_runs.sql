-- Train runs, their per-step metrics, and the exact prompt token ids of each group.
-- Keep in step with ../postgres/0003_train_runs.sql. Same conventions as 0001: STRICT tables, UUIDs
-- as 16-byte BLOBs, JSON as TEXT, fixed-width UTC text timestamps.

CREATE TABLE train_runs (
    id              BLOB NOT NULL PRIMARY KEY,
    algorithm       TEXT NOT NULL,
    config          TEXT NOT NULL,
    base_model      TEXT NOT NULL,
    -- π_t: the adapter whose samples the run learns from and which it starts from.
    parent_version  INTEGER NOT NULL REFERENCES adapters (version),
    -- The data window: groups created in [data_since, data_until).
    data_since      TEXT,
    data_until      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    error           TEXT,
    -- Reserved (status `training`) when the run starts; `ready` when it succeeds.
    adapter_version INTEGER REFERENCES adapters (version),
    created_at      TEXT NOT NULL,
    finished_at     TEXT
) STRICT;

CREATE INDEX train_runs_created_at ON train_runs (created_at);

CREATE TABLE train_steps (
    run_id            BLOB NOT NULL REFERENCES train_runs (id) ON DELETE CASCADE,
    step              INTEGER NOT NULL,
    loss              REAL NOT NULL,
    reward_margin     REAL NOT NULL,
    chosen_logratio   REAL NOT NULL,
    rejected_logratio REAL NOT NULL,
    grad_norm         REAL,
    lr                REAL,
    created_at        TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
) STRICT;

-- The token ids the model was fed (chat template applied), so the trainer scores exactly what was
-- served. NULL for groups recorded before this migration.
ALTER TABLE groups ADD COLUMN prompt_token_ids TEXT;
