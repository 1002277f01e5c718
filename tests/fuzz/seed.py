"""Seeds the fuzzed server with data, checking every answer against the published OpenAPI document.

Random ids never name a stored group, so schemathesis alone would only see empty lists and 404s.
This makes the shapes it cannot reach (a streamed completion, a judgment, a batch and their
replays, a group of each endpoint, a pair from the annotation queue, each export format) and
checks each the way schemathesis does: the status is documented, and the body validates against
that status's schema for its content type. Later, the fuzzer's list and export calls see this data.

Usage: python seed.py BASE_URL API_KEY   (exits non-zero on the first mismatch)
"""

import sys
import uuid

import requests
import schemathesis

BASE, KEY = sys.argv[1].rstrip("/"), sys.argv[2]
DOCUMENT = requests.get(f"{BASE}/openapi.json", timeout=10).json()
SCHEMA = schemathesis.openapi.from_url(f"{BASE}/openapi.json")
SESSION = requests.Session()
SESSION.headers["Authorization"] = f"Bearer {KEY}"
checked = 0


def call(method, template, path=None, expect=None, **kwargs):
    """Sends one request and checks its answer against `template`'s operation in the document."""
    global checked
    response = SESSION.request(method, f"{BASE}{path or template}", timeout=60, **kwargs)
    documented = DOCUMENT["paths"][template][method.lower()]["responses"]
    where = f"{method} {path or template} -> {response.status_code}"
    assert str(response.status_code) in documented, f"{where}: status not documented"
    assert expect is None or response.status_code == expect, f"{where}: expected {expect}: {response.text}"
    content = documented[str(response.status_code)].get("content", {})
    media = response.headers.get("content-type", "").split(";")[0].strip()
    assert not response.content or media in content, f"{where}: content type {media} not documented"
    SCHEMA[template][method].validate_response(response)
    checked += 1
    return response


def main():
    chat = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            "n": 2, "max_tokens": 4, "seed": 1, "logprobs": True, "top_logprobs": 2}
    groups = [call("POST", "/v1/chat/completions", json=chat, expect=200).json()]
    call("POST", "/v1/chat/completions", expect=200,
         json={**chat, "stream": True, "stream_options": {"include_usage": True}})
    text = {"prompt": ["Once upon"], "n": 2, "max_tokens": 4, "logprobs": 2, "stop": ["\n"]}
    groups.append(call("POST", "/v1/completions", json=text, expect=200).json())
    call("POST", "/v1/completions", json={**text, "stream": True}, expect=200)

    def judgment(group, outcome):
        a, b = (c["response_id"] for c in group["choices"])
        return {"group_id": group["group_id"], "response_a": a, "response_b": b,
                "outcome": outcome, "annotator": "seed", "criteria": ["helpful"],
                "client_id": f"seed-{uuid.uuid4()}"}

    one = judgment(groups[0], "a")
    call("POST", "/v1/judgments", json=one, expect=201)
    call("POST", "/v1/judgments", json=one, expect=200)
    batch = {"judgments": [judgment(groups[1], "tie"), judgment(groups[0], "b")]}
    call("POST", "/v1/judgments", json=batch, expect=201)
    call("POST", "/v1/judgments", json=batch, expect=200)

    for group in groups:
        call("GET", "/v1/groups/{id}", f"/v1/groups/{group['group_id']}", expect=200)
        call("GET", "/v1/groups/{id}/preferences", f"/v1/groups/{group['group_id']}/preferences",
             expect=200)
        response_id = group["choices"][0]["response_id"]
        call("GET", "/v1/responses/{id}", f"/v1/responses/{response_id}", expect=200)
    call("GET", "/v1/groups", params={"limit": 1}, expect=200)
    call("GET", "/v1/judgments", params={"source": "human"}, expect=200)
    call("GET", "/v1/annotation/next", params={"annotator": "seed-queue"}, expect=200)
    call("GET", "/v1/annotators", expect=200)
    call("GET", "/v1/annotators/{id}", "/v1/annotators/seed", expect=200)
    for export_format in ("dpo", "kto", "sppo", "raw"):
        call("GET", "/v1/exports", params={"format": export_format}, expect=200)
    call("GET", "/v1/adapters/{version}", "/v1/adapters/0", expect=200)
    call("GET", "/v1/models", expect=200)
    call("GET", "/metrics", expect=200)
    print(f"seeded the store; {checked} answers match the document")


if __name__ == "__main__":
    main()
