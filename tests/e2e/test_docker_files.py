"""No Docker engine runs in CI: check the docker/ files by parsing them."""

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBCOMMANDS = {"serve", "migrate", "openapi", "model", "worker"}


def test_compose_file_wires_postgres_migrations_and_server():
    compose = yaml.safe_load((ROOT / "docker/compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "migrate", "server"} <= set(services)
    for name in ("migrate", "server"):
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgres://flywheel:flywheel@postgres:5432/")
        assert services[name]["command"][0] in SUBCOMMANDS
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["server"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert (ROOT / services["migrate"]["build"]["dockerfile"].replace("docker/", "docker/")).exists()
    assert "8000:8000" in services["server"]["ports"]
    # Routes are deny-by-default: the compose file must hand the server an admin key.
    assert "FLYWHEEL_ADMIN_KEY" in services["server"]["environment"]


def test_compose_file_runs_the_worker_beside_a_server_that_follows_it():
    services = yaml.safe_load((ROOT / "docker/compose.yml").read_text())["services"]
    worker, server = services["worker"], services["server"]
    assert worker["command"] == ["worker"]
    assert worker["environment"]["DATABASE_URL"] == server["environment"]["DATABASE_URL"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # One worker trains: the server runs none of its own, and both see the adapter files.
    assert "--no-worker" in server["command"]
    assert worker["environment"]["FLYWHEEL_ADAPTER_DIR"].startswith("/data/")
    assert "flywheel-data:/data" in worker["volumes"] and "flywheel-data:/data" in server["volumes"]


def test_dockerfiles_build_the_binary_and_run_a_real_subcommand():
    for name, build in (("Dockerfile", None), ("Dockerfile.cuda", "scripts/build-cuda.sh")):
        text = (ROOT / "docker" / name).read_text()
        assert re.search(r"^FROM .* AS build$", text, re.M)
        if build:
            # The CUDA image builds exactly as a developer does, with the script.
            assert f"bash {build}" in text
            script = (ROOT / build).read_text()
            assert "cargo build --release --locked --features cuda" in script
            assert re.search(r"^FROM nvidia/cuda:13\.0\.\d+-runtime", text, re.M)
        else:
            assert "cargo build --release --locked" in text
        assert 'ENTRYPOINT ["flywheel"]' in text
        cmd = re.search(r'^CMD \["(\w+)"\]', text, re.M).group(1)
        assert cmd in SUBCOMMANDS
