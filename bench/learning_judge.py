"""The learning benchmark's program judge: a concise, complete answer is better.

Used two ways:
  * as `flywheel judge --kind program --judge-command 'python3 bench/learning_judge.py'`: one pair
    as JSON on stdin, a verdict as JSON on stdout (the contract in the README's "Automatic judges");
  * imported by bench/learning.py, which judges the held-out comparisons against the base with the
    very same `score` and `verdict`.

The rule scores each answer from 0 to 2:
  +1 "complete": it ends with a full stop (so it was not cut off at max_tokens, and is a sentence);
  +1 "concise":  it has at most MAX_WORDS words (env LEARNING_MAX_WORDS, default 25).
An answer of fewer than MIN_WORDS (3) words scores 0, so "Yes." or "." cannot win. The higher score
wins; equal scores tie. Nothing rewards being correct or on topic: the benchmark measures those
separately to catch reward hacking. Only the standard library is used.
"""

import json
import os
import sys

MAX_WORDS = int(os.environ.get("LEARNING_MAX_WORDS", "25"))
MIN_WORDS = 3


def score(text):
    """(score 0..2, words, complete, concise) of one answer."""
    stripped = text.strip()
    words = len(stripped.split())
    if words < MIN_WORDS:
        return 0, words, False, False
    complete = stripped.endswith(".")
    concise = words <= MAX_WORDS
    return int(complete) + int(concise), words, complete, concise


def satisfied(text):
    """The rule's ideal: complete and concise."""
    return score(text)[0] == 2


def verdict(text_a, text_b):
    """The judgment of A against B: (outcome, rationale)."""
    sa, wa, ca, na = score(text_a)
    sb, wb, cb, nb = score(text_b)
    outcome = "a" if sa > sb else "b" if sb > sa else "tie"
    rationale = (f"A: {sa}/2 ({wa} words, {'ends' if ca else 'does not end'} with a full stop); "
                 f"B: {sb}/2 ({wb} words, {'ends' if cb else 'does not end'} with a full stop); "
                 f"rule: complete and at most {MAX_WORDS} words")
    return outcome, rationale


def main():
    pair = json.load(sys.stdin)
    outcome, rationale = verdict(pair["response_a"]["text"], pair["response_b"]["text"])
    print(json.dumps({"outcome": outcome, "rationale": rationale,
                      "criteria": {"rule": "complete_and_concise", "max_words": MAX_WORDS}}))


if __name__ == "__main__":
    main()
