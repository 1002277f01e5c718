-- Variant groups (one canonical prompt and its paraphrases, each sampled alike) and rewards (a
-- scalar score of one response). Keep in step with ../sqlite/0007_variants_rewards.sql.

-- The variant index in a `variants` group: 0 is the canonical prompt, 1.. its paraphrases; NULL
-- for samples (and for every response recorded before this migration).
ALTER TABLE responses ADD COLUMN variant INTEGER CHECK (variant >= 0);
-- The token ids this response's own prompt was fed as (a JSON array; `variants` groups only), so
-- the trainer scores each variant on exactly what was served.
ALTER TABLE responses ADD COLUMN prompt_token_ids JSONB;

-- What a `variants` group is beyond its group row: the canonical prompt, how many variants and
-- samples of each it holds, and who wrote the paraphrases. A held-out group measures consistency
-- and is never trained on.
CREATE TABLE variant_groups (
    group_id            UUID PRIMARY KEY REFERENCES groups (id) ON DELETE CASCADE,
    -- The canonical chat messages, [{"role", "content"}].
    canonical           JSONB NOT NULL,
    -- How many variants, the canonical prompt included.
    variants            INTEGER NOT NULL CHECK (variants >= 1),
    samples_per_variant INTEGER NOT NULL CHECK (samples_per_variant >= 1),
    paraphrased_by      TEXT NOT NULL CHECK (paraphrased_by IN ('caller', 'policy')),
    held_out            BOOLEAN NOT NULL,
    -- A caller's name for a family of related intents, to split or report by.
    family              TEXT
);

CREATE INDEX variant_groups_held_out ON variant_groups (held_out, group_id);

-- A scalar reward of one response, by a person, a model, a rule, or computed (consistency across
-- variants, win rate over judgments). `group_id` is the response's group, copied so that a group's
-- rewards are read without a join.
CREATE TABLE rewards (
    id              UUID PRIMARY KEY,
    response_id     UUID NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    group_id        UUID NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    -- Finite, within ±1e6 (checked by the store).
    value           DOUBLE PRECISION NOT NULL CHECK (value >= -1000000 AND value <= 1000000),
    source          TEXT NOT NULL
                    CHECK (source IN ('human', 'model', 'rule', 'consistency', 'win_rate')),
    annotator       TEXT NOT NULL,
    rationale       TEXT,
    details         JSONB,
    -- NULLs never collide, so rewards without a key are never deduplicated.
    idempotency_key TEXT UNIQUE,
    -- sha256 of the canonical body: tells a replay (same key, same body) from a conflict.
    request_hash    TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX rewards_group_id ON rewards (group_id, id);
CREATE INDEX rewards_response_id ON rewards (response_id);

-- Metrics of objectives without chosen and rejected responses (GRPO: tokens, mean advantage, clip
-- fractions, KL, largest log-ratio); the pairwise columns of such a step are 0.
ALTER TABLE train_steps ADD COLUMN details JSONB;
