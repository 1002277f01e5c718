-- A free-text note on an adapter version: where an adapter registered from outside came from
-- (a cluster job, a dataset export). Keep in step with ../postgres/0005_adapter_notes.sql.

ALTER TABLE adapters ADD COLUMN note TEXT;
