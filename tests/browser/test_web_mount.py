"""The gateway's web-client routes: the page, its config, and nothing but the listed assets."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from services.gateway.web import PAGE_PATHS, mount_web_client
from shared.problems import install_problem_handlers


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("CHAT_JWKS_URL", "http://127.0.0.1:18001/.well-known/jwks.json")
    monkeypatch.delenv("WEB_AUTH_URL", raising=False)
    monkeypatch.setenv("WEB_SMS_INBOX_URL", "http://127.0.0.1:18003/dev/sms")
    app = FastAPI()
    install_problem_handlers(app)
    mount_web_client(app, mail_inbox_url="http://127.0.0.1:18025/")
    return app


async def get(app: FastAPI, path: str, host: str = "127.0.0.1:18000") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
        return await client.get(path)


async def test_page_is_served_at_root_and_at_the_mailed_link_paths_with_a_strict_policy(app: FastAPI) -> None:
    for path in PAGE_PATHS:
        response = await get(app, path)
        assert response.status_code == 200
        assert '<script type="module" src="/static/app.js">' in response.text
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_config_points_at_auth_from_the_jwks_url_and_at_the_dev_inboxes(app: FastAPI) -> None:
    config = (await get(app, "/static/config.json")).json()
    assert config == {
        "auth_url": "http://127.0.0.1:18001",
        "auth_mode": "bearer",
        "gateway_url": "",
        "mail_inbox_url": "http://127.0.0.1:18025/",
        "sms_inbox_url": "http://127.0.0.1:18003/dev/sms",
    }
    # A page opened on localhost talks to auth on localhost too (one site for cookies).
    assert (await get(app, "/static/config.json", host="localhost:18000")).json()["auth_url"] == (
        "http://localhost:18001"
    )


async def test_assets_are_served_with_their_types_and_nothing_else_is(app: FastAPI) -> None:
    script = await get(app, "/static/chat-client.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "export class ChatSocket" in script.text
    assert (await get(app, "/static/style.css")).headers["content-type"].startswith("text/css")
    for path in ("/static/__init__.py", "/static/README.md", "/static/..%2F__init__.py", "/static/x.js"):
        response = await get(app, path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
