"""Polite, safe HTTP for the scraper: every request the service makes goes through `Fetcher`.

Per request: scheme and host allow-list, private addresses refused, robots.txt, one request per
`delay` per host, at most `download_concurrency` in flight, redirects followed by hand and
re-checked, retries with backoff on 429/5xx/timeouts (Retry-After honoured), and a size cap
enforced while the body streams in.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from pipeline.errors import BadInput, Retryable
from services.scraper.config import ScraperSettings
from services.scraper.core import Policy, registered_domain, retry_after_seconds, robots_rules
from services.scraper.metrics import ScraperMetrics

log = logging.getLogger("scraper.fetch")

_REDIRECTS = {301, 302, 303, 307, 308}
#: RFC 9309: a crawler should not use a cached robots.txt for more than 24 hours.
ROBOTS_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Response:
    url: str  # after redirects
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", "")).split(";")[0].strip().lower()


class Fetcher:
    """One per service process; used from the worker's event loop."""

    def __init__(self, settings: ScraperSettings, metrics: ScraperMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._client = httpx.AsyncClient(
            headers={"User-Agent": settings.agent},
            timeout=httpx.Timeout(settings.timeout_s),
            follow_redirects=False,  # each hop is checked against the policy first
        )
        self._slots = asyncio.Semaphore(settings.download_concurrency)
        self._host_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._next_turn: dict[str, float] = {}
        self._robots: dict[str, tuple[RobotFileParser, float]] = {}  # rules, when read
        self._robots_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def get(self, url: str, policy: Policy) -> Response:
        """GET `url` under `policy`; BadInput for what will never work, Retryable for the rest."""
        try:
            return await self._get(url, policy)
        except (httpx.DecodingError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise BadInput(f"{url}: {exc}", reason="bad_response") from None
        except (ValueError, UnicodeError) as exc:  # a port over 65535, a 64-character label
            raise BadInput(
                f"{url}: not a URL that can be fetched: {exc}", reason="bad_url"
            ) from None

    async def _get(self, url: str, policy: Policy) -> Response:
        for _hop in range(self.settings.max_redirects + 1):
            await self.admit(url, policy)
            response = await self._attempts(url, self.settings.max_bytes)
            if response.status in _REDIRECTS and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status >= 300:  # an error, or a redirect with nowhere to go
                raise BadInput(f"{url}: HTTP {response.status}", reason=f"http_{response.status}")
            return response
        raise BadInput(
            f"{url}: more than {self.settings.max_redirects} redirects", reason="redirects"
        )

    async def admit(self, url: str, policy: Policy) -> None:
        """Everything a request to `url` must pass, then wait for the host's turn. The browser
        calls this too before it opens a page."""
        host = policy.check_url(url)
        port = urlsplit(url).port or (443 if url.startswith("https") else 80)
        policy.check_addresses(url, await self._resolve(host, port))
        if self.settings.respect_robots and not (await self._rules(url)).can_fetch(
            self.settings.agent, url
        ):
            raise BadInput(f"{url}: disallowed by robots.txt", reason="robots_disallowed")
        await self._wait_turn(host)

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise Retryable(f"cannot resolve {host}: {exc}", reason="dns") from None
        return [str(info[4][0]) for info in infos]

    async def _rules(self, url: str) -> RobotFileParser:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        async with self._robots_locks[origin]:  # a burst of first requests asks once
            cached = self._robots.get(origin)
            if cached is None or time.monotonic() - cached[1] > ROBOTS_TTL_S:
                await self._wait_turn(parts.hostname or "")
                response = await self._attempts(origin + "/robots.txt", 512 * 1024)
                # RFC 9309: a missing robots.txt (4xx) allows everything; a server error after
                # retries is transient, so the request is retried later rather than guessed.
                # A redirected robots.txt is taken as missing (RFC 9309 asks to follow it).
                if response.status >= 500:
                    raise Retryable(f"{origin}/robots.txt: HTTP {response.status}", reason="robots")
                ok = response.status == 200
                rules = robots_rules(response.body.decode("utf-8", "replace") if ok else None)
                self._robots[origin] = cached = (rules, time.monotonic())
        return cached[0]

    async def _wait_turn(self, host: str) -> None:
        """Requests to one host start at least `delay` apart; other hosts are not held up."""
        delay = self.settings.delay_for(registered_domain(host))
        if delay <= 0:
            return
        async with self._host_locks[host]:
            wait = self._next_turn.get(host, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_turn[host] = time.monotonic() + delay

    async def _attempts(self, url: str, max_bytes: int) -> Response:
        settings = self.settings
        for attempt in range(1, settings.fetch_attempts + 1):
            retry_after: float | None = None
            if attempt > 1:  # a retry is a request like any other: it waits for its turn
                await self._wait_turn(urlsplit(url).hostname or "")
            try:
                # A total deadline too: per-read timeouts alone let a slow drip hold a slot.
                response = await asyncio.wait_for(
                    self._once(url, max_bytes), settings.download_timeout_s
                )
                if response.status != 429 and response.status < 500:
                    return response
                problem = f"HTTP {response.status}"
                retry_after = retry_after_seconds(
                    response.headers.get("retry-after"), datetime.now(UTC)
                )
            except (httpx.TransportError, TimeoutError) as exc:  # timeouts, refused, reset
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == settings.fetch_attempts:
                break
            ceiling = min(
                settings.fetch_backoff_max_s, settings.fetch_backoff_s * 2 ** (attempt - 1)
            )
            jitter = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not cryptography
            wait = retry_after if retry_after is not None else jitter
            log.info("%s: %s, retrying in %.1fs", url, problem, wait)
            await asyncio.sleep(min(wait, settings.fetch_backoff_max_s))
        raise Retryable(
            f"{url}: {problem} after {settings.fetch_attempts} attempts", reason="fetch_failed"
        )

    async def _once(self, url: str, max_bytes: int) -> Response:
        async with self._slots, self._client.stream("GET", url) as r:
            declared = r.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise BadInput(
                    f"{url}: {declared} bytes, over the {max_bytes}-byte cap", reason="too_large"
                )
            chunks, size = [], 0
            if r.status_code < 300:
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:  # a server may lie about, or omit, its length
                        raise BadInput(
                            f"{url}: over the {max_bytes}-byte cap while streaming",
                            reason="too_large",
                        )
                    chunks.append(chunk)
            self.metrics.response(r.status_code, size)
            return Response(str(r.url), r.status_code, r.headers, b"".join(chunks))
