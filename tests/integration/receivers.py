"""Real receivers for the account managers' channels: an HTTP server that checks webhook
signatures and drops a message it already has (as a receiver should), and can fail for a while
or refuse; and an SMTP server (aiosmtpd) that keeps the mails it accepts, and refuses a mailbox."""

from __future__ import annotations

import collections
import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiohttp import web
from aiosmtpd.controller import Controller

from stream_app.notify.channels import verify
from stream_app.tools.embedded.process import free_port

__all__ = ["WebhookReceiver", "MailReceiver"]


@dataclass
class WebhookReceiver:
    """Answers `fail_first` requests with 503, then 200; a path under /refuse always gets 400."""

    secret: bytes
    fail_first: int = 0
    requests: list[dict] = field(default_factory=list)  # every request that reached it, signed or not
    received: dict[str, dict] = field(default_factory=dict)  # id -> body, each message once
    bad_signatures: int = 0
    port: int = field(default_factory=free_port)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        message_id = request.headers.get("X-Churnwatch-Id", "")
        self.requests.append({"path": request.match_info["path"], "id": message_id})
        if request.match_info["path"].startswith("refuse"):
            return web.Response(status=400, text="no such hook")
        if len(self.requests) <= self.fail_first:
            return web.Response(status=503, text="down for maintenance")
        if not verify(self.secret, request.headers.get("X-Churnwatch-Timestamp", ""), body,
                      request.headers.get("X-Churnwatch-Signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.received.setdefault(message_id, {"path": request.match_info["path"], **(await request.json())})
        return web.Response(status=204)

    def ids(self, path: str) -> collections.Counter[str]:
        """How many requests each message id made to `path` and were taken (resends included)."""
        return collections.Counter(r["id"] for r in self.requests if r["path"] == path)


class _Handler:
    def __init__(self, refuse: set[str]) -> None:
        self.refuse, self.mails = refuse, []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's name
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.mails.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


class MailReceiver:
    """aiosmtpd on a free port, in its own thread."""

    def __init__(self, refuse: set[str] = frozenset()) -> None:
        self.handler = _Handler(set(refuse))
        self.port = free_port()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "MailReceiver":
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def mails(self) -> list[EmailMessage]:
        return self.handler.mails

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.mails if m["To"] == address]
