"""The whole loop through the real binary: `flywheel serve` on a tiny random model with its
in-process trainer worker tuned to train quickly; samples through the `openai` client, judgments over
HTTP, and the server ends up serving the adapter the worker trained. Also `flywheel import`.

Runs its own server (FLYWHEEL_BIN is the release binary; scripts/test.sh sets it)."""

import json
import os
import socket
import subprocess
import time
import urllib.request

import openai
import pytest

BIN = os.environ.get("FLYWHEEL_BIN")
KEY = "fw_loop_0123456789abcdef"
pytestmark = pytest.mark.skipif(not BIN and not os.environ.get("CI"), reason="FLYWHEEL_BIN is not set")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("loop")
    tiny = work / "tiny"
    subprocess.check_call([BIN, "model", "tiny", str(tiny)], stdout=subprocess.DEVNULL)
    port = free_port()
    env = dict(os.environ, DATABASE_URL=f"sqlite://{work}/loop.db", FLYWHEEL_ADMIN_KEY=KEY, RUST_LOG="info")
    log = open(work / "server.log", "w")
    process = subprocess.Popen(
        [BIN, "serve", "--model", str(tiny), "--port", str(port),
         "--worker-interval-secs", "1", "--min-new-judgments", "4", "--steps", "2", "--lr", "0.01",
         "--rank", "4", "--batch", "2", "--adapter-dir", str(work / "adapters"), "--follow-interval-secs", "1", "--promotion", "always"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{base}/ready").status == 200:
                break
        except OSError:
            time.sleep(0.5)
    yield {"base": base, "work": work, "tiny": tiny, "env": env}
    process.terminate()
    process.wait(timeout=30)


def call(base, method, path, body=None):
    request = urllib.request.Request(f"{base}{path}", data=None if body is None else json.dumps(body).encode(), method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


def test_judged_samples_become_an_adapter_the_server_then_serves(server):
    client = openai.OpenAI(base_url=f"{server['base']}/v1", api_key=KEY)
    model = client.models.list().data[0].id
    for i, prompt in enumerate(["Name a colour.", "Name an animal."]):
        out = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}],
            n=3, temperature=1.0, max_tokens=12, seed=i)
        assert out.model_extra["adapter"] == 0
        group = out.model_extra["group_id"]
        ids = [c.model_extra["response_id"] for c in out.choices]
        judgments = [{"group_id": group, "response_a": a, "response_b": b, "outcome": "a", "annotator": "loop"}
                     for a, b in [(ids[0], ids[1]), (ids[0], ids[2]), (ids[1], ids[2])]]
        call(server["base"], "POST", "/v1/judgments", {"judgments": judgments})

    served = None
    for _ in range(120):
        out = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Which adapter?"}], max_tokens=2, temperature=0)
        served = out.model_extra["adapter"]
        if served == 1:
            break
        time.sleep(1)

    assert served == 1, (server["work"] / "server.log").read_text()[-4000:]
    adapter = call(server["base"], "GET", "/v1/adapters/1")
    assert adapter["status"] == "active" and adapter["parent_version"] == 0
    assert os.path.isfile(os.path.join(adapter["path"], "adapter_model.safetensors"))


def test_flywheel_import_reads_a_dpo_file_into_judged_groups(server):
    data = server["work"] / "ultrafeedback.jsonl"
    rows = [
        {"prompt": "Name a prime.", "chosen": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}],
         "rejected": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "8"}], "score_chosen": 9.0},
        {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [BIN, "import", str(data), "--model", str(server["tiny"]), "--annotator", "uf", "--source", "model"]

    first = subprocess.run(command, env=server["env"], capture_output=True, text=True, timeout=120)
    again = subprocess.run(command, env=server["env"], capture_output=True, text=True, timeout=120)

    assert first.returncode == 0, first.stderr
    assert "2 records read: 2 imported, 0 already present" in first.stdout
    assert "0 imported, 2 already present" in again.stdout
    listed = call(server["base"], "GET", "/v1/judgments?annotator=uf")
    assert len(listed["data"]) == 2 and all(j["source"] == "model" for j in listed["data"])
