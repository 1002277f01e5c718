-- Judgments, annotation assignments, API key use. Keep in step with ../sqlite/0002_judgments.sql.

CREATE TABLE judgments (
    id              UUID PRIMARY KEY,
    group_id        UUID NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    response_a      UUID NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    response_b      UUID NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    outcome         TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad')),
    -- The probability that a beats b, when the judge gives one.
    strength        DOUBLE PRECISION CHECK (strength >= 0 AND strength <= 1),
    annotator       TEXT NOT NULL,
    source          TEXT NOT NULL CHECK (source IN ('human', 'model', 'rule')),
    rationale       TEXT,
    criteria        JSONB,
    -- NULLs never collide, so judgments without a key are never deduplicated.
    idempotency_key TEXT UNIQUE,
    -- sha256 of the canonical body: tells a replay (same key, same body) from a conflict.
    request_hash    TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    CHECK (response_a <> response_b)
);

CREATE INDEX judgments_group_id ON judgments (group_id);
CREATE INDEX judgments_annotator_id ON judgments (annotator, id);
CREATE INDEX judgments_created_at ON judgments (created_at);
-- A pair is looked up in both orders; each order uses this index.
CREATE INDEX judgments_pair ON judgments (response_a, response_b);

-- One pair handed to one annotator. `response_a < response_b` always (the pair's canonical order);
-- `left_is_a` is the random side the page shows response_a on.
CREATE TABLE annotation_assignments (
    id          UUID PRIMARY KEY,
    group_id    UUID NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    response_a  UUID NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    response_b  UUID NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    annotator   TEXT NOT NULL,
    left_is_a   BOOLEAN NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    judgment_id UUID REFERENCES judgments (id) ON DELETE SET NULL,
    CHECK (response_a < response_b),
    -- The queue never hands one annotator the same pair twice, even under concurrent requests.
    UNIQUE (annotator, response_a, response_b)
);

CREATE INDEX annotation_assignments_pair ON annotation_assignments (response_a, response_b);

ALTER TABLE api_keys ADD COLUMN last_used_at TIMESTAMPTZ;
