#!/usr/bin/env python3
"""Judgment ingestion on Postgres at concurrency 32: `POST /v1/judgments` on `flywheel serve` against
`pgbench` doing single-row inserts into a table of the same shape, in one run on one machine.

    python3 bench/ingest_bench.py [--judgments 4000] [--concurrency 32]

Needs release builds of the server and of the compiled load generator
(`cargo build --release --bin flywheel --example ingest_load`), Postgres on 127.0.0.1:5432 (trust
auth, user postgres) and pgbench. The server runs the tiny random model (generation is not measured).
The load generator (server/examples/ingest_load.rs: 32 keep-alive connections, one judgment per
request) shares the cores with the server and Postgres, as pgbench's client does.
"""

import argparse
import http.client
import json
import os
import pathlib
import re
import subprocess
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
FLYWHEEL = os.environ.get("FLYWHEEL_BIN", str(TARGET / "release" / "flywheel"))
LOAD = os.environ.get("INGEST_LOAD_BIN", str(TARGET / "release" / "examples" / "ingest_load"))
KEY = "fw_bench_" + uuid.uuid4().hex
PSQL = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres"]

TABLE = """CREATE TABLE judgments_shape (
  id UUID PRIMARY KEY, group_id UUID NOT NULL, response_a UUID NOT NULL, response_b UUID NOT NULL,
  outcome TEXT NOT NULL, strength DOUBLE PRECISION, annotator TEXT NOT NULL, source TEXT NOT NULL,
  rationale TEXT, criteria JSONB, idempotency_key TEXT UNIQUE, request_hash TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL)"""
INSERT = """INSERT INTO judgments_shape VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
  gen_random_uuid(), 'a', NULL, 'bench', 'human', NULL, NULL, md5(random()::text), md5(random()::text), now());"""


SAME_TABLE_INSERT = """\\set k random(0, 15)
INSERT INTO judgments (id, group_id, response_a, response_b, outcome, annotator, source, idempotency_key, request_hash, created_at)
  SELECT gen_random_uuid(), g, a, b, 'a', 'bench', 'human', md5(random()::text), md5(random()::text), now() FROM bench_pairs WHERE k = :k;
"""


def request(conn, method, path, body=None):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, json.loads(data) if data else None


def flywheel(total, concurrency, port, tiny):
    db = f"flywheel_ingest_{uuid.uuid4().hex[:12]}"
    subprocess.check_call(PSQL + ["-c", f"CREATE DATABASE {db}"])
    env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}", FLYWHEEL_ADMIN_KEY=KEY, RUST_LOG="warn")
    server = subprocess.Popen([FLYWHEEL, "serve", "--model", tiny, "--port", str(port), "--no-worker"], env=env)
    try:
        for _ in range(120):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        groups = []
        for i in range(16):
            status, body = request(conn, "POST", "/v1/chat/completions", {
                "messages": [{"role": "user", "content": f"prompt {i}"}], "n": 4, "max_tokens": 4})
            assert status == 200, body
            groups.append((body["group_id"], [c["response_id"] for c in body["choices"]]))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(groups, f)
        out = subprocess.check_output([LOAD, f"http://127.0.0.1:{port}", KEY, f.name, str(total), str(concurrency)], text=True)
        ours = json.loads(out)
        server.terminate()
        server.wait()
        # pgbench into Flywheel's own judgments table (every index, foreign key and check), picking
        # one of the same 16 groups' response pairs per insert, as the HTTP requests did.
        pairs = "CREATE TABLE bench_pairs AS SELECT row_number() OVER () - 1 AS k, g, a, b FROM (VALUES " + ", ".join(
            f"('{g}'::uuid, '{r[0]}'::uuid, '{r[1]}'::uuid)" for g, r in groups) + ") AS v(g, a, b)"
        subprocess.check_call(PSQL + ["-d", db, "-c", pairs])
        return ours, run_pgbench(db, SAME_TABLE_INSERT, concurrency, 10)
    finally:
        server.terminate()
        server.wait()
        subprocess.call(PSQL + ["-c", f"DROP DATABASE {db}"])


def run_pgbench(db, script, concurrency, seconds):
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    out = subprocess.check_output(
        ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-c", str(concurrency), "-j", "2",
         "-T", str(seconds), "-f", f.name, db], text=True, stderr=subprocess.STDOUT)
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
    return {"rate": tps, "latency_avg_ms": latency}


def pgbench(concurrency, seconds):
    db = f"pgbench_ingest_{uuid.uuid4().hex[:12]}"
    subprocess.check_call(PSQL + ["-c", f"CREATE DATABASE {db}"])
    try:
        subprocess.check_call(PSQL + ["-d", db, "-c", TABLE])
        return run_pgbench(db, INSERT, concurrency, seconds)
    finally:
        subprocess.call(PSQL + ["-c", f"DROP DATABASE {db}"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    tiny = tempfile.mkdtemp() + "/tiny"
    subprocess.check_call([FLYWHEEL, "model", "tiny", tiny], stdout=subprocess.DEVNULL)
    ours, same_table = flywheel(args.judgments, args.concurrency, 18000 + os.getpid() % 1000, tiny)
    theirs = pgbench(args.concurrency, 10)
    print(f"\nconcurrency {args.concurrency}, {args.judgments} judgments\n")
    print("| system | rows/s | p50 | p99 |")
    print("|---|---|---|---|")
    print(f"| flywheel POST /v1/judgments (HTTP + Postgres) | {ours['rate']:.0f} | {ours['p50_ms']:.1f} ms | {ours['p99_ms']:.1f} ms |")
    print(f"| pgbench single-row INSERT, bare table of the same columns | {theirs['rate']:.0f} | avg {theirs['latency_avg_ms']:.1f} ms | |")
    print(f"| pgbench single-row INSERT into Flywheel's judgments table | {same_table['rate']:.0f} | avg {same_table['latency_avg_ms']:.1f} ms | |")
    print(f"flywheel / pgbench (bare table) = {ours['rate'] / theirs['rate']:.2f}")
    print(f"flywheel / pgbench (judgments table) = {ours['rate'] / same_table['rate']:.2f}")


if __name__ == "__main__":
    main()
