"""deploy/Dockerfile: one image that can run every process the compose file asks of it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")


def runtime_stage() -> str:
    return DOCKERFILE.rsplit("\nFROM ", 1)[1]


def test_image_runs_python_311_as_an_unprivileged_user() -> None:
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^USER chat$", runtime_stage(), re.MULTILINE)


def test_image_holds_every_module_the_compose_commands_run() -> None:
    copied = set(re.findall(r"^COPY (\w+) \./\1$", runtime_stage(), re.MULTILINE))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    modules: set[str] = set()
    for spec in compose["services"].values():
        command = " ".join(spec.get("command", []))
        modules.update(re.findall(r"python -m ([\w.]+)", command))
    assert modules >= {"services.auth.main", "shared.migrate", "deploy.smtp_sink"}
    for module in modules:
        top = module.split(".")[0]
        assert top in copied, f"{module} is run by compose but {top}/ is not copied into the image"
        assert (ROOT / Path(*module.split("."))).with_suffix(".py").is_file(), module


def test_services_bind_all_interfaces_and_keep_keys_in_the_mounted_directory() -> None:
    stage = runtime_stage()
    for service in ("AUTH", "GATEWAY", "STORE", "NOTIFIER"):
        assert f"{service}_HOST=0.0.0.0" in stage
    assert "AUTH_KEYS_DIR=/app/var/keys" in stage
