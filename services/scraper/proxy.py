"""A forward proxy on 127.0.0.1 through which the browser makes every request: the page, its
redirects, scripts, images and XHRs. Each is checked against the policy of the page being
rendered (allowed hosts, public addresses) and connected to the very address that was checked,
so neither a page's JavaScript nor DNS rebinding can reach what the policy forbids. Between
renders there is no policy and everything is refused."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from urllib.parse import urlsplit

from pipeline.errors import BadInput
from services.scraper.core import Policy

log = logging.getLogger("scraper.proxy")

_HEAD_LIMIT = 64 * 1024
_HOP_BY_HOP = {b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization"}


class PolicyProxy:
    def __init__(self) -> None:
        self.policy: Policy | None = None
        #: Hosts refused under the current policy.
        self.refused: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    def allow(self, policy: Policy | None) -> None:
        """The policy for the page about to be rendered (None: refuse everything)."""
        self.policy = policy
        self.refused = set()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, version = head.split(b"\r\n", 1)[0].split(b" ", 2)
            url, host, port = _destination(method, target.decode("latin-1"))
            address = await self._admit(url, host, port)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            writer.close()
            return
        except BadInput as exc:
            self.refused.add(host)
            # Between pages only the browser's own housekeeping asks (update checks, sign-in).
            level = logging.DEBUG if exc.reason == "no_render" else logging.WARNING
            log.log(level, "browser request refused: %s", exc, extra={"reason": exc.reason})
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(address, port)
        except OSError:
            writer.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            writer.close()
            return
        if method == b"CONNECT":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            up_writer.write(_origin_form(head, method, url, version))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _admit(self, url: str, host: str, port: int) -> str:
        policy = self.policy
        if policy is None:
            raise BadInput(f"{url}: no page is being rendered", reason="no_render")
        policy.check_url(url)
        try:
            infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise BadInput(f"{url}: cannot resolve {host}: {exc}", reason="dns") from None
        addresses = [str(info[4][0]) for info in infos]
        policy.check_addresses(url, addresses)
        return addresses[0]


def _destination(method: bytes, target: str) -> tuple[str, str, int]:
    """(url to check, host, port) of a proxy request: CONNECT host:port or an absolute URL."""
    if method == b"CONNECT":
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        return f"https://{host}:{port}/", host, int(port)
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not a proxy request: {target}")
    return target, parts.hostname, parts.port or 80


def _origin_form(head: bytes, method: bytes, url: str, version: bytes) -> bytes:
    """The request as the origin expects it: a path, not a URL, one request per connection
    (so a second request on it cannot go to a host nobody checked)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [method + b" " + path.encode("latin-1") + b" " + version]
    for line in head.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if line and name not in _HOP_BY_HOP:
            lines.append(line)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()
