"""docker-compose.yml names every service and every variable the code reads (Docker does not run here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import envtable

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = {"auth": 8001, "gateway": 8000, "store": 8002, "notifier": 8003}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def test_compose_names_infrastructure_services_mail_sink_and_migrations(compose: dict[str, Any]) -> None:
    names = set(services(compose))
    assert {"postgres", "rabbitmq", "migrate", "mail", *APP_SERVICES} <= names
    assert "management" in services(compose)["rabbitmq"]["image"]
    assert any("15672" in str(p) for p in services(compose)["rabbitmq"]["ports"])


def test_the_four_services_run_from_one_image_built_by_deploy_dockerfile(compose: dict[str, Any]) -> None:
    images = {services(compose)[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    for name in APP_SERVICES:
        build = services(compose)[name]["build"]
        assert build["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert services(compose)["mail"]["image"] in images


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_each_service_runs_its_own_module(compose: dict[str, Any], service: str) -> None:
    command = services(compose)[service]["command"]
    assert command == ["python", "-m", f"services.{service}.main"]
    if importlib.util.find_spec(f"services.{service}.main") is None:
        pytest.skip(f"services/{service}/main.py does not exist yet")


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_each_service_has_a_readiness_healthcheck_on_its_port(compose: dict[str, Any], service: str) -> None:
    check = " ".join(services(compose)[service]["healthcheck"]["test"])
    assert f"127.0.0.1:{APP_SERVICES[service]}/readyz" in check


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_each_service_can_be_scaled(compose: dict[str, Any], service: str) -> None:
    spec = services(compose)[service]
    # A fixed host port or container name would make `docker compose up --scale` fail.
    assert "ports" not in spec, f"{service} publishes host ports; route it through the edge instead"
    assert "container_name" not in spec
    env = spec["environment"]
    assert env[f"{service.upper()}_HOST"] == "0.0.0.0"


def test_the_edge_owns_the_public_ports_and_proxies_to_existing_services(compose: dict[str, Any]) -> None:
    edge = services(compose)["edge"]
    published = {str(p).split(":")[0] for p in edge["ports"]}
    assert {"8000", "8001", "8003", "8025"} <= published
    conf = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    upstreams = set(re.findall(r"set \$upstream http://([a-z]+):\d+;", conf))
    assert upstreams == {"gateway", "auth", "notifier", "mail"}
    assert upstreams <= set(services(compose))
    assert "Upgrade $http_upgrade" in conf  # WebSocket through the edge


def _expected(scope: str) -> set[str]:
    expected = envtable.expected_by_scope()
    return expected.get("common", set()) | expected.get(scope, set())


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_each_service_names_every_variable_its_code_reads(compose: dict[str, Any], service: str) -> None:
    if not (ROOT / "services" / service / "settings.py").exists():
        pytest.skip(
            f"services/{service}/settings.py does not exist yet: nothing to derive its variables from"
        )
    env = services(compose)[service]["environment"]
    missing = sorted(_expected(service) - set(env))
    assert not missing, (
        f"{service} in docker-compose.yml lacks {missing}: run `python -m deploy.envtable --write`"
    )


def test_in_network_addresses_replace_loopback_defaults(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = services(compose)[name]["environment"]
        assert "@postgres:5432/" in env["CHAT_DATABASE_URL"]
        assert "@rabbitmq:5672/" in env["CHAT_AMQP_URL"]
        assert "//auth:8001/" in env["CHAT_JWKS_URL"]
    assert services(compose)["notifier"]["environment"]["NOTIFIER_SMTP_HOST"].endswith(":-mail}")
    # The browser reaches auth and the inboxes through the edge, not by container names.
    gateway = services(compose)["gateway"]["environment"]
    assert "localhost:8001" in gateway["WEB_AUTH_URL"]


def test_every_service_waits_for_migrations_and_healthy_infrastructure(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        depends = services(compose)[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["rabbitmq"]["condition"] == "service_healthy"


def test_migrate_applies_migrations_and_ensures_the_admin(compose: dict[str, Any]) -> None:
    script = " ".join(services(compose)["migrate"]["command"])
    assert "python -m shared.migrate" in script
    assert "services.auth.cli ensure-admin" in script
    # $$ keeps the shell's variables away from Compose's own interpolation.
    assert '"$$ADMIN_USERNAME"' in script
    # The dev signing key is made once, in the volume every auth replica reads.
    assert services(compose)["migrate"]["volumes"] == services(compose)["auth"]["volumes"]


def test_generated_variable_lists_in_the_compose_file_are_up_to_date() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert envtable.render_compose(text, envtable.collect()) == text, (
        "run `python -m deploy.envtable --write`"
    )


def test_variables_come_from_every_settings_class() -> None:
    scopes = {scope for scope, _ in envtable.settings_classes()}
    assert "common" in scopes
    missing = [s for s in APP_SERVICES if not (ROOT / "services" / s / "settings.py").exists()]
    assert scopes == {"common", *APP_SERVICES} - set(missing)
    expected = envtable.expected_by_scope()
    assert "CHAT_DATABASE_URL" in expected["common"]
    if "auth" in scopes:
        # An alias-only field (auth's `environment` reads CHAT_ENVIRONMENT) is not made AUTH_ENVIRONMENT.
        assert "AUTH_ENVIRONMENT" not in expected["auth"]
