"""Secrets never reach a log through an exception: neither a traceback nor a database error's text."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

PHONE = "+79161234567"

SCRIPT = f"""
import logging
from shared.logging import configure_logging, get_logger

configure_logging("kernel-test")
try:
    raise RuntimeError("insert failed for {PHONE}")
except RuntimeError:
    get_logger("t").exception("structlog_failure")
    logging.getLogger("stdlib").exception("stdlib_failure")
"""


def test_a_logged_traceback_has_its_phone_numbers_masked() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout + done.stderr
    assert all("RuntimeError" in line for line in lines)  # the traceback is still there...
    assert PHONE not in done.stdout  # ...with the number masked
    assert "***-45-67" in done.stdout


async def test_a_database_error_does_not_carry_its_bound_values(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1 / 0 WHERE CAST(:phone AS text) <> ''"), {"phone": PHONE})
    assert PHONE not in str(caught.value)
