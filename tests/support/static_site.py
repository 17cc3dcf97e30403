"""A folder served over HTTP on 127.0.0.1, with extra routes laid over it (robots.txt, a
redirect, a page built by JavaScript), recording every request: the web-site scraper's test
ground and the real consulting-site pages of $DISTILLERY_TEST_DATA/data/web."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class Server(ThreadingHTTPServer):
    # The stdlib's listen backlog is 5: a burst of concurrent connections would lose SYNs and
    # wait a second for the retransmit. Real servers listen with hundreds (nginx: 511).
    request_queue_size = 512
    daemon_threads = True


@dataclass(frozen=True)
class Route:
    status: int = 200
    content_type: str = "text/html"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class StaticSite:
    root: Path
    #: Served instead of files; a list is served in turn, its last answer repeated.
    routes: dict[str, Route | list[Route]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._server = Server(("127.0.0.1", 0), _handler(self))
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StaticSite:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(site: StaticSite) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            super().__init__(*args, directory=str(site.root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = urlsplit(self.path).path
            site.requests[path] += 1
            route = site.routes.get(path)
            if isinstance(route, list):
                route = route.pop(0) if len(route) > 1 else route[0]
            if route is None:
                super().do_GET()
                return
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            for name, value in route.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(route.body)

    return Handler
