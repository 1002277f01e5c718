"""Drive a running `flywheel serve` (the default SmolLM2-135M-Instruct) with the official
`openai` client and with curl, as the README shows. FLYWHEEL_URL points at the server;
FLYWHEEL_API_KEY is a key it accepts (scripts/test.sh starts it with FLYWHEEL_ADMIN_KEY)."""

import json
import math
import os
import subprocess

import openai
import pytest

BASE = os.environ["FLYWHEEL_URL"]
KEY = os.environ["FLYWHEEL_API_KEY"]
AUTH = ["-H", f"Authorization: Bearer {KEY}"]
client = openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY)
MODEL = client.models.list().data[0].id


def test_a_simple_question_gets_a_coherent_english_answer():
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=24,
    )
    answer = out.choices[0].message.content
    assert "Paris" in answer, answer
    assert out.model_extra["group_id"]
    assert out.model_extra["adapter"] == 0
    assert out.choices[0].model_extra["response_id"]


def test_n_samples_come_back_as_one_group():
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a fruit."}],
        n=3,
        temperature=0.9,
        max_tokens=12,
        seed=5,
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    group = json.loads(subprocess.check_output(["curl", "-sf", *AUTH, f"{BASE}/v1/groups/{out.model_extra['group_id']}"]))
    assert [r["text"] for r in group["responses"]] == [c.message.content for c in out.choices]
    assert group["seed"] == 5


def test_streaming_with_include_usage():
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to five."}],
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_logprobs_are_natural_logs():
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        temperature=0,
        max_tokens=5,
        logprobs=True,
        top_logprobs=3,
    )
    content = out.choices[0].logprobs.content
    assert content
    for token in content:
        assert token.logprob <= 0
        assert sum(math.exp(t.logprob) for t in token.top_logprobs) <= 1.0 + 1e-5
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob, abs=1e-5)


def test_legacy_completions():
    out = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=5, temperature=0)
    assert out.choices[0].text
    assert out.usage.completion_tokens <= 5


def test_errors_surface_as_openai_exceptions():
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=0)
    assert bad.value.status_code == 400
    assert bad.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_the_readme_curl_example():
    body = subprocess.check_output(
        [
            "curl", "-sf", *AUTH, f"{BASE}/v1/chat/completions",
            "-H", "Content-Type: application/json",
            "-d", json.dumps({"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16, "temperature": 0}),
        ]
    )
    reply = json.loads(body)
    assert reply["choices"][0]["message"]["content"]
    assert reply["group_id"]


def test_a_wrong_key_is_refused_and_the_probes_stay_open():
    stranger = openai.OpenAI(base_url=f"{BASE}/v1", api_key="fw_not_a_real_key_000000")
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.models.list()
    assert refused.value.status_code == 401
    assert subprocess.run(["curl", "-sf", f"{BASE}/ready"], capture_output=True).returncode == 0


def test_a_judgment_posted_with_curl_shapes_the_preferences():
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], n=2, max_tokens=6, seed=3
    )
    group = out.model_extra["group_id"]
    a, b = (c.model_extra["response_id"] for c in out.choices)
    judgment = {"group_id": group, "response_a": a, "response_b": b, "outcome": "a", "annotator": "e2e"}
    stored = json.loads(subprocess.check_output(
        ["curl", "-sf", *AUTH, f"{BASE}/v1/judgments", "-H", "Content-Type: application/json",
         "-H", "Idempotency-Key: e2e-1", "-d", json.dumps(judgment)]
    ))
    assert stored["outcome"] == "a"
    prefs = json.loads(subprocess.check_output(["curl", "-sf", *AUTH, f"{BASE}/v1/groups/{group}/preferences"]))
    rates = {p["response_id"]: p["win_rate"] for p in prefs["responses"]}
    assert rates[a] > rates[b]
