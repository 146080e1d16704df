"""What a person does on the web client, as small steps the tests read like a script."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from playwright.async_api import Locator, Page, expect

PASSWORD = "Correct-horse-battery-9"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class ChatPage:
    page: Page

    # --- navigation and account -------------------------------------------------

    async def goto(self, path: str = "/") -> None:
        await self.page.goto(path)
        await expect(self.page.locator("body")).to_be_visible()

    async def register(self, username: str, *, email: str | None = None, password: str = PASSWORD) -> None:
        form = self.page.get_by_test_id("register-form")
        await form.locator("[name=username]").fill(username)
        await form.locator("[name=password]").fill(password)
        if email:
            await form.locator("[name=email]").fill(email)
        await form.get_by_role("button", name="Register").click()
        await self.expect_signed_in()

    async def login(self, login: str, password: str) -> None:
        form = self.page.get_by_test_id("login-form")
        await form.locator("[name=login]").fill(login)
        await form.locator("[name=password]").fill(password)
        await form.get_by_role("button", name="Log in").click()
        await self.expect_signed_in()

    async def expect_signed_in(self) -> None:
        await expect(self.page.get_by_test_id("logout")).to_be_visible()
        await self.expect_online()

    async def expect_online(self) -> None:
        await expect(self.page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open")

    def error(self) -> Locator:
        return self.page.get_by_test_id("error")

    # --- conversations ----------------------------------------------------------

    async def start_conversation(self, subject: str, body: str = "") -> None:
        form = self.page.get_by_test_id("new-conversation")
        await form.locator("[name=subject]").fill(subject)
        if body:
            await form.locator("[name=body]").fill(body)
        await form.get_by_role("button", name="Start a consultation").click()
        await expect(self.page.get_by_test_id("chat-subject")).to_have_text(subject)

    def conversation_item(self, subject: str) -> Locator:
        return self.page.get_by_test_id("conversation-item").filter(has_text=subject)

    async def open_conversation(self, subject: str) -> None:
        await self.conversation_item(subject).click()
        await expect(self.page.get_by_test_id("chat-subject")).to_have_text(subject)

    # --- messages ---------------------------------------------------------------

    def messages(self) -> Locator:
        return self.page.get_by_test_id("message")

    def message(self, body: str) -> Locator:
        return self.messages().filter(
            has=self.page.locator(".body", has_text=re.compile(f"^{re.escape(body)}$"))
        )

    async def send(self, body: str) -> None:
        composer = self.page.get_by_test_id("composer")
        await composer.fill(body)
        await composer.press("Enter")

    async def type_slowly(self, text: str) -> None:
        """Key by key, as a person types: each key fires the input event that sends `typing`."""
        await self.page.get_by_test_id("composer").press_sequentially(text, delay=30)

    async def expect_message(self, body: str) -> None:
        await expect(self.message(body)).to_have_count(1)

    async def receipt(self, body: str) -> Locator:
        return self.message(body).get_by_test_id("receipt")

    async def rendered(self) -> list[tuple[int | None, str, bool]]:
        """(seq, body, mine) of every message bubble, top to bottom."""
        rows: list[tuple[int | None, str, bool]] = await self.page.evaluate(
            """() => [...document.querySelectorAll('[data-testid="message"]')].map((li) => [
                li.dataset.seq ? Number(li.dataset.seq) : null,
                li.querySelector('.body').textContent,
                li.dataset.mine === 'true',
            ])"""
        )
        return [(seq, body, mine) for seq, body, mine in rows]

    async def screenshot(self, path: str) -> None:
        await self.page.screenshot(path=path, full_page=True)
