"""README.md: the two commands first, ports that match the code, and a variable table that is current."""

from __future__ import annotations

from pathlib import Path

from deploy import envtable
from deploy.launcher import SERVICES, SINK_HTTP_PORT, SINK_SMTP_PORT

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    commands = [line.split("#")[0].strip() for line in README.splitlines()[:4] if line.startswith("make ")]
    assert commands == ["make run", "make test"]


def test_readme_table_of_variables_is_generated_from_the_settings_classes() -> None:
    assert envtable.render_readme(README, envtable.collect()) == README, (
        "run `python -m deploy.envtable --write`"
    )
    for name in ("CHAT_DATABASE_URL", "CHAT_AMQP_URL", "ADMIN_PASSWORD"):
        assert f"`{name}`" in README


def test_readme_names_every_port_the_launcher_uses() -> None:
    ports_table = README.split("## What runs where", 1)[1].split("##", 1)[0]
    for service, port in SERVICES.items():
        assert f"| {service} | {port} |" in ports_table
    assert str(SINK_SMTP_PORT) in ports_table and str(SINK_HTTP_PORT) in ports_table


def test_readme_diagram_shows_the_four_services_and_the_broker() -> None:
    diagram = README.split("## What runs where", 1)[1].split("## Try", 1)[0]
    for box in ("auth", "gateway", "store", "notifier", "RabbitMQ"):
        assert box in diagram


def test_ci_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & 0o111, ".ci/run must be executable"
    lines = [ln for ln in script.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[-1].strip() in {"make test", "exec make test"}
