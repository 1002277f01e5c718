-- The arena: adapters enter as `candidate`, duels (kind `duel`) pit a candidate against the
-- incumbent on held-out evaluation prompts, and every promotion or retirement is recorded with its
-- evidence. Keep in step with ../sqlite/0006_arena.sql.

ALTER TABLE groups DROP CONSTRAINT groups_kind_check;
ALTER TABLE groups ADD CONSTRAINT groups_kind_check
    CHECK (kind IN ('samples', 'variants', 'duel'));

ALTER TABLE adapters DROP CONSTRAINT adapters_status_check;
ALTER TABLE adapters ADD CONSTRAINT adapters_status_check
    CHECK (status IN ('training', 'ready', 'candidate', 'active', 'retired', 'failed'));

-- A vLLM-style LoRA name (`POST /v1/load_lora_adapter`). A name belongs to one live adapter at a
-- time; retired and failed ones keep theirs as history, so a name can be loaded again after it was
-- unloaded (as vLLM tooling does).
ALTER TABLE adapters ADD COLUMN name TEXT;
CREATE UNIQUE INDEX adapters_live_name ON adapters (name)
    WHERE status IN ('training', 'ready', 'candidate', 'active');

-- A duel: one group of two responses to one evaluation prompt, the candidate's (idx 0) and the
-- incumbent's (idx 1), sampled with the same parameters and seed. `round` numbers the passes over
-- the prompt set, each with its own seed; the unique key lets concurrent replicas race safely.
CREATE TABLE duels (
    group_id          UUID PRIMARY KEY REFERENCES groups (id) ON DELETE CASCADE,
    candidate_version BIGINT NOT NULL REFERENCES adapters (version),
    incumbent_version BIGINT NOT NULL REFERENCES adapters (version),
    eval_prompt_id    UUID NOT NULL REFERENCES eval_prompts (id),
    round             INTEGER NOT NULL CHECK (round >= 0),
    UNIQUE (candidate_version, incumbent_version, eval_prompt_id, round)
);

-- Every promotion or retirement of a candidate, with what it rested on.
CREATE TABLE adapter_decisions (
    id                UUID PRIMARY KEY,
    version           BIGINT NOT NULL REFERENCES adapters (version),
    -- The active version when it was decided.
    incumbent_version BIGINT NOT NULL,
    action            TEXT NOT NULL CHECK (action IN ('promote', 'retire')),
    decided_by        TEXT NOT NULL CHECK (decided_by IN ('gate', 'admin', 'always')),
    rule              TEXT NOT NULL,
    judgments         BIGINT NOT NULL,
    wins              DOUBLE PRECISION NOT NULL,
    both_bad          BIGINT NOT NULL,
    probability       DOUBLE PRECISION,
    lower_bound       DOUBLE PRECISION,
    upper_bound       DOUBLE PRECISION,
    confidence        DOUBLE PRECISION,
    reason            TEXT,
    created_at        TIMESTAMPTZ NOT NULL
);

CREATE INDEX adapter_decisions_version ON adapter_decisions (version, created_at);
