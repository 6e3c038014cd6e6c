"""The channels a message travels by: a signed webhook (an SMS gateway is one too) and e-mail.

A webhook is a POST of the message's JSON with three headers:
- `X-Churnwatch-Id`: the message id, the receiver's key to drop a message it already has;
- `X-Churnwatch-Timestamp`: when it was signed, in Unix seconds;
- `X-Churnwatch-Signature`: `sha256=` and the hex HMAC-SHA256, under
  `CHURNWATCH_NOTIFY_WEBHOOK_SECRET`, of the timestamp, a dot and the body, so that a receiver
  knows the sender and refuses a replay of an old message (`verify` does both).
A 2xx answer delivers it; 408, 429 and 5xx, a timeout or a connection that fails are tried
again; any other answer is a refusal that trying again would not change.

An e-mail goes through the SMTP server of the settings, with the message id in its
`Message-ID`, so that a mail client shows a message sent twice once. A 4xx reply or a lost
connection is tried again; a 5xx reply (an unknown mailbox, a refused login) is a refusal.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import urlsplit

import aiohttp

from stream_app.errors import ChurnwatchError
from stream_app.notify.messages import Message
from stream_app.settings.notify import Notify

__all__ = ["Retry", "Refused", "Webhook", "Email", "sign", "verify", "SIGNATURE_TOLERANCE_S", "SMTP_PORTS"]

SIGNATURE_TOLERANCE_S = 300  # a receiver refuses a signature older than this (a replay)
_RETRY_STATUS = {408, 429}
SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}  # when CHURNWATCH_NOTIFY_SMTP_PORT is unset


class Retry(ChurnwatchError):
    """The channel could not take the message now; it may later."""


class Refused(ChurnwatchError):
    """The channel refused the message; trying again would not change that."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, now: float | None = None) -> bool:
    """What a receiver checks: the signature is ours, over this body, and recent.

    >>> key, s = b"k" * 16, sign(b"k" * 16, 1_700_000_000, b"{}")
    >>> verify(key, "1700000000", b"{}", s, now=1_700_000_100), verify(key, "1700000000", b"{ }", s, now=1_700_000_100)
    (True, False)
    >>> verify(key, "1700000000", b"{}", s, now=1_700_001_000)  # a replay, ten minutes on
    False
    >>> verify(key, "1700000000", b"{}", "sha256=é", now=1_700_000_100)  # a forged header is refused, not raised on
    False
    """
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > SIGNATURE_TOLERANCE_S:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body).encode(), signature.encode("utf-8", "replace"))


class Webhook:
    def __init__(self, session: aiohttp.ClientSession, settings: Notify) -> None:
        self.session = session
        self.secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
        self.timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_s)

    async def send(self, url: str, message: Message) -> None:
        if self.secret is None:
            raise Refused("CHURNWATCH_NOTIFY_WEBHOOK_SECRET is not set: webhooks are signed")
        body = json.dumps(message.payload, separators=(",", ":"), sort_keys=True).encode()
        now = int(time.time())
        headers = {"Content-Type": "application/json", "X-Churnwatch-Id": message.message_id,
                   "X-Churnwatch-Timestamp": str(now), "X-Churnwatch-Signature": sign(self.secret, now, body)}
        where = _host(url)  # a webhook's path and query can hold its token: never in a log or dead letter
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=self.timeout,
                                         allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                reason = f"{where} answered {response.status} {response.reason or ''}".strip()
                if response.status in _RETRY_STATUS or response.status >= 500:
                    raise Retry(reason)
                raise Refused(reason)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Retry(f"{where}: {type(exc).__name__}") from None


def _host(url: str) -> str:
    """The scheme, host and port of `url`.

    >>> _host("https://hooks.example.com/services/T000/B000/XXXX?token=abc")
    'https://hooks.example.com'
    """
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class Email:
    def __init__(self, settings: Notify) -> None:
        self.settings = settings

    async def send(self, address: str, message: Message) -> None:
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = self.settings.smtp_from, address, message.subject
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = f"<{message.message_id.replace(':', '.')}@churnwatch>"
        mail.set_content(message.text)
        await asyncio.to_thread(self._send, mail)

    def _send(self, mail: EmailMessage) -> None:
        s = self.settings
        if s.smtp_host is None:
            raise Refused("CHURNWATCH_NOTIFY_SMTP_HOST is not set")
        port = s.smtp_port or SMTP_PORTS[s.smtp_security]
        where = f"SMTP {s.smtp_host}:{port}"
        try:
            context = ssl.create_default_context()
            smtp = smtplib.SMTP_SSL(s.smtp_host, port, timeout=30, context=context) \
                if s.smtp_security == "tls" else smtplib.SMTP(s.smtp_host, port, timeout=30)
            try:
                if s.smtp_security == "starttls":
                    smtp.starttls(context=context)
                if s.smtp_username and s.smtp_password:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
                smtp.send_message(mail)
            finally:
                _close(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise (Retry if all(400 <= c < 500 for c in codes) else Refused)(f"{where} refused {mail['To']}: "
                                                                           f"{exc.recipients}") from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            raise (Retry if 400 <= exc.smtp_code < 500 else Refused)(f"{where}: {exc.smtp_code} {text}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise Retry(f"{where}: {type(exc).__name__}: {exc}") from None


def _close(smtp: smtplib.SMTP) -> None:
    """Say goodbye; once the server has taken the mail, a goodbye it does not answer changes nothing."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
