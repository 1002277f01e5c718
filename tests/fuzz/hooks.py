"""Schemathesis hooks for fuzzing `flywheel serve` (loaded through `SCHEMATHESIS_HOOKS`).

The generation routes are fuzzed over their whole documented ranges, except for how much they
generate: `max_tokens`, `max_completion_tokens` and `n` are clamped, and a length is set when the
body has none, so that every case costs milliseconds on the tiny random-weight model. Values of the
wrong type or below range are left alone: they are the negative cases, answered 400.

A string `model` is dropped: the served name is not in the document (it is the model directory's),
so a generated one is almost always a 404 and the case would never reach the engine. The Rust API
tests cover the unknown-model 404.
"""

import schemathesis

GENERATION_PATHS = {"/v1/chat/completions", "/v1/completions"}
MAX_TOKENS = 4
MAX_N = 2


def _clamp(body: dict, field: str, ceiling: int) -> None:
    value = body.get(field)
    if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
        body[field] = ceiling


@schemathesis.hook
def map_case(context, case):
    if context.operation is None or context.operation.path not in GENERATION_PATHS:
        return case
    body = case.body
    if not isinstance(body, dict):
        return case
    if isinstance(body.get("model"), str):
        del body["model"]
    for field in ("max_tokens", "max_completion_tokens"):
        _clamp(body, field, MAX_TOKENS)
    _clamp(body, "n", MAX_N)
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = MAX_TOKENS
    return case
