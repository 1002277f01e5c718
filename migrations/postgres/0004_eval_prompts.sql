-- Held-out evaluation prompts: duels are drawn from them, and no training query reads this table.
-- Keep in step with ../sqlite/0004_eval_prompts.sql.

CREATE TABLE eval_prompts (
    id           UUID PRIMARY KEY,
    -- The chat messages, [{"role", "content"}], in the shape a group keeps a chat prompt in.
    messages     JSONB NOT NULL,
    -- sha256 of the messages' canonical JSON: the same prompt is stored once, whatever its label.
    content_hash TEXT NOT NULL UNIQUE,
    -- Where it came from (`api`, or the file `flywheel eval-prompts import` read).
    source       TEXT,
    label        TEXT,
    created_at   TIMESTAMPTZ NOT NULL
);
