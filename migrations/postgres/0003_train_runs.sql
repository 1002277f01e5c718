-- Train runs, their per-step metrics, and the exact prompt token ids of each group.
-- Keep in step with ../sqlite/0003_train_runs.sql.

CREATE TABLE train_runs (
    id              UUID PRIMARY KEY,
    algorithm       TEXT NOT NULL,
    config          JSONB NOT NULL,
    base_model      TEXT NOT NULL,
    -- π_t: the adapter whose samples the run learns from and which it starts from.
    parent_version  BIGINT NOT NULL REFERENCES adapters (version),
    -- The data window: groups created in [data_since, data_until).
    data_since      TIMESTAMPTZ,
    data_until      TIMESTAMPTZ NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    error           TEXT,
    -- Reserved (status `training`) when the run starts; `ready` when it succeeds.
    adapter_version BIGINT REFERENCES adapters (version),
    created_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ
);

CREATE INDEX train_runs_created_at ON train_runs (created_at);

CREATE TABLE train_steps (
    run_id            UUID NOT NULL REFERENCES train_runs (id) ON DELETE CASCADE,
    step              BIGINT NOT NULL,
    loss              DOUBLE PRECISION NOT NULL,
    reward_margin     DOUBLE PRECISION NOT NULL,
    chosen_logratio   DOUBLE PRECISION NOT NULL,
    rejected_logratio DOUBLE PRECISION NOT NULL,
    grad_norm         DOUBLE PRECISION,
    lr                DOUBLE PRECISION,
    created_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- The token ids the model was fed (chat template applied), so the trainer scores exactly what was
-- served. NULL for groups recorded before this migration.
ALTER TABLE groups ADD COLUMN prompt_token_ids JSONB;
