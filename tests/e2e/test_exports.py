"""`GET /v1/exports` against a running `flywheel serve`: every format loads with the Hugging Face
`datasets` package. FLYWHEEL_URL points at the server; FLYWHEEL_API_KEY is an admin key
(scripts/test.sh starts it with FLYWHEEL_ADMIN_KEY)."""

import json
import os
import urllib.request
from datetime import datetime, timedelta, timezone

import datasets
import openai
import pytest

BASE = os.environ["FLYWHEEL_URL"]
KEY = os.environ["FLYWHEEL_API_KEY"]
client = openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY)
MODEL = client.models.list().data[0].id


def call(method, path, body=None):
    """One authorised request; returns the response's headers and body text."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{BASE}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request) as response:
        return response.headers, response.read().decode()


@pytest.fixture(scope="module")
def judged_group():
    """A group of three samples judged 0 ≻ 1 and 1 ≻ 2, and the time just before it was made."""
    since = (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        n=3,
        temperature=0.9,
        max_tokens=8,
    )
    group = out.model_extra["group_id"]
    ids = [c.model_extra["response_id"] for c in out.choices]
    for a, b in [(ids[0], ids[1]), (ids[1], ids[2])]:
        call("POST", "/v1/judgments", {
            "group_id": group, "response_a": a, "response_b": b,
            "outcome": "a", "annotator": "e2e-export",
        })
    return group, since


def export(tmp_path, fmt, group, since):
    """The group's lines of a `fmt` export, written to a JSONL file; returns its path and manifest."""
    headers, text = call("GET", f"/v1/exports?format={fmt}&since={since}")
    assert headers["Content-Type"] == "application/x-ndjson"
    manifest = json.loads(headers["x-flywheel-manifest"])
    lines = [json.loads(l) for l in text.splitlines()]
    own = [l for l in lines if l.get("group_id", l.get("group", {}).get("id")) == group]
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("".join(json.dumps(l) + "\n" for l in own))
    return str(path), manifest


def test_a_dpo_export_loads_as_a_trl_preference_dataset(tmp_path, judged_group):
    path, manifest = export(tmp_path, "dpo", *judged_group)
    ds = datasets.load_dataset("json", data_files=path, split="train")
    assert ds.num_rows == 2
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    assert ds[0]["prompt"][0] == {"role": "user", "content": "Name a colour."}
    assert ds[0]["chosen"][0]["role"] == "assistant"
    assert manifest["format"] == "dpo" and manifest["records"] >= 2


def test_a_kto_export_loads_with_boolean_labels(tmp_path, judged_group):
    path, _ = export(tmp_path, "kto", *judged_group)
    ds = datasets.load_dataset("json", data_files=path, split="train")
    assert ds.num_rows == 4
    assert ds["label"] == [True, False, True, False]
    assert ds[0]["completion"][0]["role"] == "assistant"


def test_an_sppo_export_loads_with_win_rates(tmp_path, judged_group):
    path, _ = export(tmp_path, "sppo", *judged_group)
    ds = datasets.load_dataset("json", data_files=path, split="train")
    assert ds.num_rows == 1
    assert len(ds[0]["responses"]) == 3
    rates = ds[0]["win_rates"]
    assert rates[0] > rates[2]


def test_a_raw_export_loads_with_token_ids_and_judgments(tmp_path, judged_group):
    path, manifest = export(tmp_path, "raw", *judged_group)
    ds = datasets.load_dataset("json", data_files=path, split="train")
    assert ds.num_rows == 1
    response = ds[0]["responses"][0]
    assert len(response["token_ids"]) == len(response["logprobs"]) > 0
    assert len(ds[0]["judgments"]) == 2
    assert 0 in manifest["adapter_versions"]
