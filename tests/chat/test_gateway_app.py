"""The gateway application's public surface, without starting it."""

from __future__ import annotations

from services.gateway.main import create_app


def test_openapi_documents_every_chat_route() -> None:
    schema = create_app().openapi()
    paths = schema["paths"]
    expected = {
        ("/api/conversations", "post"),
        ("/api/conversations", "get"),
        ("/api/admin/conversations", "get"),
        ("/api/conversations/{conversation_id}", "get"),
        ("/api/conversations/{conversation_id}", "patch"),
        ("/api/conversations/{conversation_id}/messages", "get"),
        ("/api/conversations/{conversation_id}/messages", "post"),
        ("/api/conversations/{conversation_id}/read", "post"),
        ("/api/messages/{message_id}", "patch"),
        ("/api/messages/{message_id}", "delete"),
        ("/api/search", "get"),
    }
    assert expected <= {(path, method) for path, ops in paths.items() for method in ops}
    assert "404" in paths["/api/conversations/{conversation_id}"]["get"]["responses"]
