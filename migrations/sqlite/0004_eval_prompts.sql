-- Held-out evaluation prompts: duels are drawn from them, and no training query reads this table.
-- Keep in step with ../postgres/0004_eval_prompts.sql. Same conventions as 0001: STRICT tables,
-- UUIDs as 16-byte BLOBs, JSON as TEXT, fixed-width UTC text timestamps.

CREATE TABLE eval_prompts (
    id           BLOB NOT NULL PRIMARY KEY,
    -- The chat messages, [{"role", "content"}], in the shape a group keeps a chat prompt in.
    messages     TEXT NOT NULL,
    -- sha256 of the messages' canonical JSON: the same prompt is stored once, whatever its label.
    content_hash TEXT NOT NULL UNIQUE,
    -- Where it came from (`api`, or the file `flywheel eval-prompts import` read).
    source       TEXT,
    label        TEXT,
    created_at   TEXT NOT NULL
) STRICT;
