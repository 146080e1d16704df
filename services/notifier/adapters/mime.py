"""The bytes of an outgoing email: multipart/alternative (plain + HTML), 7-bit clean.

Written directly rather than through ``email.message.EmailMessage``: its header registry parses
every header back (addresses, parameters) and cost ~1.3 ms of CPU per mail, most of the send
path. The shape here is fixed and small: UTF-8 bodies in quoted-printable (never a line over 76
characters, no 8BITMIME needed), non-ASCII header text as RFC 2047 encoded words, CRLF endings.
"""

from __future__ import annotations

import binascii
import email.utils
import uuid
from email.header import Header

from services.notifier.service_layer.ports import OutgoingEmail


class BadHeader(ValueError):
    """A header value that would end the header early (a line break): never sent."""


def _plain(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise BadHeader("line break in a header value")
    return value


def encode_text(value: str) -> str:
    """Free text for a header (a subject): line breaks become spaces, non-ASCII encoded words,
    folded at 78 columns."""
    one_line = " ".join(value.splitlines())
    charset = "us-ascii" if one_line.isascii() else "utf-8"
    return Header(one_line, charset, header_name="Subject").encode(linesep="\r\n")


def encode_address(value: str) -> str:
    """``Name <addr>`` with a non-ASCII name as an encoded word (the address stays as it is)."""
    name, addr = email.utils.parseaddr(_plain(value))
    if not addr:
        return value
    return email.utils.formataddr((name, addr), charset="utf-8") if name else addr


def _part(content_type: str, text: str) -> bytes:
    # Encoded with bare LF (soft breaks then match), every LF made CRLF after: the output is 7-bit.
    body = text.replace("\r\n", "\n").replace("\r", "\n").encode()
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode()
        + binascii.b2a_qp(body, istext=True).replace(b"\n", b"\r\n")
    )


def render_email(mail: OutgoingEmail, sender: str) -> bytes:
    """The whole message as handed to DATA; ``sender`` is the From header (``Name <addr>``)."""
    # "=_" never occurs in quoted-printable text ("=" is always "=3D" or a soft break): no clash.
    boundary = f"=_{uuid.uuid4().hex}"
    headers = [
        f"From: {encode_address(sender)}",
        f"To: {_plain(mail.to)}",
        f"Subject: {encode_text(mail.subject)}",
        f"Date: {email.utils.format_datetime(mail.date)}",
        f"Message-ID: {_plain(mail.message_id)}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
    ]
    if mail.unsubscribe:
        headers.append(f"List-Unsubscribe: <{_plain(mail.unsubscribe)}>")
    parts = [_part("text/plain", mail.text)]
    if mail.html:
        parts.append(_part("text/html", mail.html))
    if len(parts) == 1:
        return ("\r\n".join(headers) + "\r\n").encode() + parts[0]
    headers.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
    delimiter = f"\r\n--{boundary}\r\n".encode()
    return (
        ("\r\n".join(headers) + "\r\n\r\n").encode()
        + delimiter
        + delimiter.join(parts)
        + f"\r\n--{boundary}--\r\n".encode()
    )
