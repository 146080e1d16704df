"""A user and an administrator use the web client in headless Chromium against the real services."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import FLOOD_CAP, NewPage, Stack, screenshot_path
from tests.browser.pages import PASSWORD, ChatPage, unique

pytestmark = pytest.mark.e2e


async def _admin(new_page: NewPage, stack: Stack) -> ChatPage:
    admin = ChatPage(await new_page())
    await admin.goto()
    await admin.login(stack.admin.username, stack.admin.password)
    await expect(admin.page.get_by_test_id("admin-view")).to_be_visible()
    return admin


async def _user(new_page: NewPage, *, email: str | None = None) -> tuple[ChatPage, str]:
    user = ChatPage(await new_page())
    await user.goto()
    username = unique("user")
    await user.register(username, email=email)
    await expect(user.page.get_by_test_id("user-view")).to_be_visible()
    return user, username


async def _wait_for_mail(
    stack: Stack, to: str, *, subject_has: str = "", timeout: float = 20.0
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for mail in await stack.mail.messages(to=to):
            if subject_has.lower() in str(mail["subject"]).lower() + str(mail["text"]).lower():
                return mail
        await asyncio.sleep(0.2)
    raise AssertionError(f"no mail to {to} containing {subject_has!r} in the dev inbox")


async def _wait_for_sms(stack: Stack, to: str, timeout: float = 20.0) -> None:
    """Wait until the notifier's dev SMS inbox holds a text to ``to`` (it is filled asynchronously)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            response = await client.get(f"{stack.sms_inbox_url}.json", timeout=5.0)
            if any(m["to"] == to for m in response.json()["messages"]):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"no SMS to {to} in the dev SMS inbox")


async def test_user_and_admin_exchange_messages_live_with_typing_receipts_and_presence(
    new_page: NewPage, stack: Stack
) -> None:
    signed_out = ChatPage(await new_page())
    await signed_out.goto()
    await expect(signed_out.page.get_by_test_id("auth-view")).to_be_visible()
    await signed_out.screenshot(str(screenshot_path("01-sign-in")))

    user, _ = await _user(new_page)
    subject = unique("Invoice question ")
    await user.start_conversation(subject, "Hello, my invoice looks wrong")
    await expect(await user.receipt("Hello, my invoice looks wrong")).to_have_text("✓")

    admin = await _admin(new_page, stack)
    item = admin.conversation_item(subject)
    await expect(item.get_by_test_id("unread")).to_have_text("1")
    await admin.open_conversation(subject)
    await admin.expect_message("Hello, my invoice looks wrong")

    # The administrator has read it: the user's single tick becomes a double one, live.
    await expect(await user.receipt("Hello, my invoice looks wrong")).to_have_text("✓✓")
    await expect(user.page.get_by_test_id("presence")).to_have_attribute("data-state", "active")

    await admin.type_slowly("Let me check")
    await expect(user.page.get_by_test_id("typing")).to_contain_text("typing")
    await admin.page.get_by_test_id("composer").press("Enter")
    await user.expect_message("Let me check")
    await expect(user.page.get_by_test_id("typing")).to_be_hidden()
    await expect(await admin.receipt("Let me check")).to_have_text("✓✓")

    await user.type_slowly("Thank you")
    await expect(admin.page.get_by_test_id("typing")).to_contain_text("typing")
    await user.page.get_by_test_id("composer").press("Enter")
    await admin.expect_message("Thank you")
    await expect(await user.receipt("Thank you")).to_have_text("✓✓")

    await user.screenshot(str(screenshot_path("02-user-view")))
    await admin.screenshot(str(screenshot_path("03-admin-view")))

    # The administrator closes the consultation; the user sees the status change live.
    await admin.page.get_by_test_id("close-conversation").click()
    await expect(user.page.get_by_test_id("chat-status")).to_have_text("CLOSED")
    # The admin's inbox follows its status filter: gone from "Open", listed under "Closed".
    await expect(admin.conversation_item(subject)).to_have_count(0)
    await admin.page.get_by_test_id("status-filter").select_option("CLOSED")
    await expect(admin.conversation_item(subject)).to_have_count(1)

    assert [body for _, body, _ in await user.rendered()] == [
        "Hello, my invoice looks wrong",
        "Let me check",
        "Thank you",
    ]


async def test_offline_user_is_emailed_when_the_admin_writes(new_page: NewPage, stack: Stack) -> None:
    email = f"{unique('away')}@example.test"
    user, _ = await _user(new_page, email=email)

    # The address is verified by the link in the dev mail inbox, the way a person would.
    verification = await _wait_for_mail(stack, email, subject_has="verif")
    link = re.search(r"https?://\S+/verify-email\?token=[\w\-.~%]+", str(verification["text"]))
    assert link, verification["text"]
    await user.page.goto(link.group(0))
    await expect(user.page.get_by_test_id("notice")).to_contain_text("verified")

    subject = unique("Delivery ")
    await user.start_conversation(subject, "Where is my parcel?")
    admin = await _admin(new_page, stack)
    await admin.open_conversation(subject)
    await admin.expect_message("Where is my parcel?")

    await user.page.context.close()  # the user leaves: no live connection anywhere
    await expect(admin.page.get_by_test_id("presence")).to_have_attribute("data-state", "offline")
    await expect(admin.page.get_by_test_id("presence")).to_contain_text("last seen")
    await admin.send("Your parcel left the warehouse today")
    await expect(await admin.receipt("Your parcel left the warehouse today")).to_have_text("✓")

    await _wait_for_mail(stack, email, subject_has="parcel left the warehouse")
    inbox = await admin.page.context.new_page()
    await inbox.goto(stack.mail.url)
    row = inbox.locator("tr", has_text=email).filter(has_text="new message")
    await expect(row).to_have_count(1)
    await inbox.screenshot(path=str(screenshot_path("04-dev-mail-inbox")), full_page=True)
    await row.get_by_role("link").click()
    await expect(inbox.locator("pre").first).to_contain_text("Your parcel left the warehouse today")


async def test_network_drop_mid_conversation_loses_and_doubles_nothing(
    new_page: NewPage, stack: Stack
) -> None:
    user, _ = await _user(new_page)
    subject = unique("Flaky wifi ")
    await user.start_conversation(subject, "first")
    admin = await _admin(new_page, stack)
    await admin.open_conversation(subject)
    await admin.send("second")
    await user.expect_message("second")

    await user.page.context.set_offline(True)
    await expect(user.page.get_by_test_id("conn-state")).to_have_attribute("data-state", "offline")
    for body in ("third", "fourth", "fifth"):
        await admin.send(body)
        await expect(await admin.receipt(body)).to_have_text(re.compile("✓"))
    await user.send("sixth, written offline")
    await expect(await user.receipt("sixth, written offline")).to_have_attribute("data-state", "pending")
    await user.screenshot(str(screenshot_path("05-user-offline")))

    await user.page.context.set_offline(False)
    await user.expect_online()
    await admin.send("seventh")

    expected = ["first", "second", "third", "fourth", "fifth", "sixth, written offline", "seventh"]
    for body in expected:
        await user.expect_message(body)
        await admin.expect_message(body)
    for side in (user, admin):
        rendered = await side.rendered()
        assert [body for _, body, _ in rendered] == expected
        assert [seq for seq, _, _ in rendered] == list(range(1, len(expected) + 1))

    history = await user.page.evaluate(
        "async (id) => (await window.chatApp.api.messages(id, {limit: 100})).map((m) => m.body)",
        await user.page.evaluate("window.chatApp.view.current"),
    )
    assert history == expected


async def test_token_refresh_keeps_the_person_signed_in(new_page: NewPage, stack: Stack) -> None:
    user, username = await _user(new_page)
    subject = unique("Refresh ")
    await user.start_conversation(subject, "before refresh")
    first = await user.page.evaluate("window.chatApp.auth.session.refresh_token")
    await user.page.evaluate("window.chatApp.auth.refresh()")
    await user.page.evaluate("window.chatApp.auth.refresh()")
    assert await user.page.evaluate("window.chatApp.auth.session.refresh_token") != first

    # The live socket takes the new token in-band, without reconnecting.
    await user.page.wait_for_function(
        "() => window.chatApp.socket.lastFrames.some((f) => f.type === 'auth.refreshed')"
    )
    await user.send("after refresh")
    await expect(await user.receipt("after refresh")).to_have_text(re.compile("✓"))

    # An access token that has run out is renewed on the next call, invisibly.
    before = await user.page.evaluate("window.chatApp.auth.session.refresh_token")
    subjects = await user.page.evaluate(
        """async () => {
            window.chatApp.auth.session.expires_at = Date.now() - 1000;
            return (await window.chatApp.api.conversations()).map((c) => c.subject);
        }"""
    )
    assert subjects == [subject]
    assert await user.page.evaluate("window.chatApp.auth.session.refresh_token") != before

    # A reload keeps the session (the rotated refresh token lives in this tab's storage).
    await user.page.reload()
    await user.expect_signed_in()
    await expect(user.page.get_by_test_id("whoami")).to_contain_text(username)
    await user.open_conversation(subject)
    await user.expect_message("after refresh")


async def test_phone_is_verified_with_the_code_from_the_dev_sms_inbox(
    new_page: NewPage, stack: Stack
) -> None:
    user, _ = await _user(new_page)
    await user.page.get_by_test_id("profile-button").click()
    dialog = user.page.get_by_test_id("profile-dialog")
    await dialog.locator("[name=phone]").fill("+1 650 253 0000")
    await dialog.get_by_role("button", name="Send me a code").click()
    await expect(dialog.get_by_test_id("profile-notice")).to_contain_text("code was sent")

    await _wait_for_sms(stack, "+16502530000")
    sms_inbox = await user.page.context.new_page()
    await sms_inbox.goto(stack.sms_inbox_url)
    row = sms_inbox.locator("tr", has_text="+16502530000").first
    await expect(row).to_be_visible()
    code = re.search(r"\b(\d{6})\b", await row.inner_text())
    assert code, await row.inner_text()
    await sms_inbox.close()

    await dialog.locator("[name=code]").fill(code.group(1))
    await dialog.get_by_role("button", name="Verify").click()
    await expect(user.page.get_by_test_id("phone-state")).to_have_attribute("data-verified", "true")
    await expect(user.page.get_by_test_id("phone-state")).to_contain_text("verified ✓")
    await user.screenshot(str(screenshot_path("06-profile-phone-verified")))


async def test_failures_are_explained_to_the_person(new_page: NewPage, stack: Stack) -> None:
    page = ChatPage(await new_page())
    await page.goto()
    form = page.page.get_by_test_id("login-form")
    await form.locator("[name=login]").fill(unique("nobody"))
    await form.locator("[name=password]").fill("Wrong-password-123")
    await form.get_by_role("button", name="Log in").click()
    await expect(page.error()).to_contain_text("Invalid credentials")

    register = page.page.get_by_test_id("register-form")
    await register.locator("[name=username]").fill(unique("short"))
    await register.locator("[name=password]").fill("short")
    await register.get_by_role("button", name="Register").click()
    await expect(page.error()).to_contain_text("password must be at least 10 characters")
    await page.screenshot(str(screenshot_path("07-error-message")))


async def test_cookie_mode_keeps_tokens_away_from_scripts_and_still_chats(
    new_page: NewPage, stack: Stack
) -> None:
    """The module's cookie mode, as a Next.js front end would use it: httpOnly cookies plus CSRF header."""
    page = ChatPage(await new_page())
    await page.goto()
    result = await page.page.evaluate(
        """async ({ authUrl, username, password }) => {
            const { createChat } = await import("/static/chat-client.js");
            const { auth, api, socket } = createChat({ authUrl, mode: "cookie" });
            await auth.register({ username, password });
            const me = await auth.me();
            await auth.refresh();
            const opened = await api.openConversation({ subject: "over cookies" });
            const conversationId = opened.conversation.conversation_id;
            const open = new Promise((resolve) => socket.addEventListener("state", (e) => {
                if (e.detail.state === "open") resolve();
            }));
            socket.connect();
            await open;
            const ack = await socket.send(conversationId, "sent with cookies only");
            socket.close();
            const history = await api.messages(conversationId);
            return {
                username: me.username,
                tokenInScript: /(access|refresh)_token=/.test(document.cookie),
                tokenInMemory: auth.session.access_token,
                seq: ack.seq,
                bodies: history.map((m) => m.body),
            };
        }""",
        {"authUrl": stack.auth.url, "username": unique("cookie"), "password": PASSWORD},
    )
    assert result["tokenInScript"] is False
    assert result["tokenInMemory"] is None
    assert result["seq"] == 1
    assert result["bodies"] == ["sent with cookies only"]


async def test_gateway_restart_reconnects_with_backoff_and_resumes(new_page: NewPage, stack: Stack) -> None:
    user, _ = await _user(new_page)
    subject = unique("Restart ")
    await user.start_conversation(subject, "before the restart")
    admin = await _admin(new_page, stack)
    await admin.open_conversation(subject)
    await admin.expect_message("before the restart")

    await asyncio.to_thread(stack.gateway.stop)
    await expect(user.page.get_by_test_id("conn-state")).to_have_attribute("data-state", "reconnecting")
    await user.send("written while the gateway was down")
    stack.gateway.start()
    await stack.gateway.wait_ready(timeout=45)

    await user.expect_online()
    await admin.expect_online()
    await admin.send("after the restart")
    expected = ["before the restart", "written while the gateway was down", "after the restart"]
    for side in (user, admin):
        for body in expected:
            await side.expect_message(body)
        assert [(seq, body) for seq, body, _ in await side.rendered()] == list(enumerate(expected, start=1))


async def test_flood_cap_is_explained_and_the_refused_message_offers_a_retry(
    new_page: NewPage, stack: Stack
) -> None:
    user, _ = await _user(new_page)
    await user.start_conversation(unique("Chatty "), "message 0")
    for n in range(1, FLOOD_CAP + 1):
        await user.send(f"message {n}")
    refused = user.message(f"message {FLOOD_CAP}")
    await expect(refused.get_by_test_id("receipt")).to_have_attribute("data-state", "failed")
    await expect(refused.get_by_test_id("retry")).to_be_visible()
    await expect(user.error()).to_contain_text(f"at most {FLOOD_CAP} messages per minute")
    await expect(user.error()).to_contain_text("flood_limited")
    await expect(user.message(f"message {FLOOD_CAP - 1}").get_by_test_id("receipt")).to_contain_text("✓")
