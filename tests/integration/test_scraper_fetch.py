"""The scraper's Fetcher against a real HTTP server on 127.0.0.1: retries, Retry-After, the
size cap, redirects, politeness and robots.txt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from pipeline.errors import BadInput, Retryable
from pipeline.settings import KafkaSettings
from services.scraper.config import ScraperSettings
from services.scraper.core import Policy
from services.scraper.fetch import Fetcher
from services.scraper.metrics import ScraperMetrics
from tests.support.static_site import Route, StaticSite

pytestmark = pytest.mark.integration

OK = Route(body=b"<html><body>fine</body></html>")


def fetcher(**overrides: object) -> Fetcher:
    config: dict[str, object] = {
        "politeness_delay_s": 0,
        "fetch_attempts": 3,
        "fetch_backoff_s": 0.01,
        **overrides,
    }
    settings = ScraperSettings(kafka=KafkaSettings(bootstrap_servers="unused:9092"), **config)
    return Fetcher(settings, ScraperMetrics("scraper", CollectorRegistry()))


@pytest.fixture
def site(tmp_path) -> Iterator[StaticSite]:
    with StaticSite(tmp_path) as s:
        yield s


def get(f: Fetcher, url: str, policy: Policy | None = None):  # noqa: ANN201
    return asyncio.run(f.get(url, policy or Policy.for_urls([url], allow_private=True)))


def test_429_with_retry_after_then_success(site):
    site.routes["/busy"] = [Route(status=429, headers=(("Retry-After", "1"),)), OK]
    start = time.monotonic()
    f = fetcher()
    response = get(f, f"{site.url}/busy")
    assert response.status == 200 and response.body.endswith(b"fine</body></html>")
    assert time.monotonic() - start >= 1.0  # waited as the server asked
    assert site.requests["/busy"] == 2
    sample = f.metrics.registry.get_sample_value
    labels = {"service": "scraper"}
    assert (
        sample("distillery_scraper_responses_total", {**labels, "status": "4xx"}) == 2
    )  # + robots
    assert sample("distillery_scraper_responses_total", {**labels, "status": "2xx"}) == 1
    assert sample("distillery_scraper_bytes_total", labels) == len(response.body)


def test_server_errors_retried_then_given_up_as_retryable(site):
    site.routes["/down"] = [Route(status=503)]
    with pytest.raises(Retryable) as caught:
        get(fetcher(), f"{site.url}/down")
    assert "HTTP 503 after 3 attempts" in str(caught.value)
    assert site.requests["/down"] == 3


def test_404_is_permanent_and_not_retried(site):
    with pytest.raises(BadInput) as caught:
        get(fetcher(), f"{site.url}/missing.html")
    assert caught.value.reason == "http_404"
    assert site.requests["/missing.html"] == 1


def test_declared_length_over_the_cap_is_refused_before_the_body(site):
    site.routes["/big.pdf"] = Route(content_type="application/pdf", body=b"%PDF-" + b"0" * 5000)
    with pytest.raises(BadInput) as caught:
        get(fetcher(max_bytes=4096), f"{site.url}/big.pdf")
    assert caught.value.reason == "too_large"
    assert "5005 bytes" in str(caught.value)


def test_redirects_followed_within_the_policy(site):
    site.routes["/old"] = Route(status=301, headers=(("Location", "/new"),))
    site.routes["/new"] = OK
    response = get(fetcher(), f"{site.url}/old")
    assert response.url == f"{site.url}/new" and response.status == 200


def test_redirect_loops_end(site):
    site.routes["/a"] = Route(status=302, headers=(("Location", "/b"),))
    site.routes["/b"] = Route(status=302, headers=(("Location", "/a"),))
    with pytest.raises(BadInput) as caught:
        get(fetcher(max_redirects=3), f"{site.url}/a")
    assert caught.value.reason == "redirects"
    assert site.requests["/a"] + site.requests["/b"] == 4


def test_politeness_spaces_requests_to_one_host(site):
    site.routes["/p"] = OK
    f = fetcher(politeness_delay_s=0.3)
    policy = Policy.for_urls([site.url], allow_private=True)

    async def three() -> float:
        start = time.monotonic()
        await asyncio.gather(*(f.get(f"{site.url}/p", policy) for _ in range(3)))
        return time.monotonic() - start

    # robots.txt, then three pages: four turns, 0.3 s apart.
    assert asyncio.run(three()) >= 0.9
    assert site.requests["/p"] == 3


def test_robots_read_once_for_a_burst_and_honoured(site):
    site.routes["/robots.txt"] = Route(
        content_type="text/plain", body=b"User-agent: *\nDisallow: /private/\n"
    )
    site.routes["/ok"] = OK
    f = fetcher()
    policy = Policy.for_urls([site.url], allow_private=True)

    async def burst() -> list[object]:
        urls = [f"{site.url}/ok"] * 5 + [f"{site.url}/private/x"]
        return await asyncio.gather(*(f.get(u, policy) for u in urls), return_exceptions=True)

    results = asyncio.run(burst())
    assert site.requests["/robots.txt"] == 1
    assert all(getattr(r, "status", None) == 200 for r in results[:5])
    assert isinstance(results[5], BadInput) and results[5].reason == "robots_disallowed"
    assert site.requests["/private/x"] == 0


def test_a_redirect_without_location_is_an_error_not_a_page(site):
    site.routes["/nowhere"] = Route(status=302)
    with pytest.raises(BadInput) as caught:
        get(fetcher(), f"{site.url}/nowhere")
    assert caught.value.reason == "http_302"


def test_a_redirect_to_an_impossible_port_is_bad_input(site):
    site.routes["/odd"] = Route(status=301, headers=(("Location", "http://127.0.0.1:99999/"),))
    with pytest.raises(BadInput) as caught:
        get(fetcher(), f"{site.url}/odd")
    assert caught.value.reason == "bad_url"


def test_a_body_that_does_not_decode_is_bad_input(site):
    site.routes["/broken.gz"] = Route(
        body=b"not gzip at all", headers=(("Content-Encoding", "gzip"),)
    )
    with pytest.raises(BadInput) as caught:
        get(fetcher(), f"{site.url}/broken.gz")
    assert caught.value.reason == "bad_response"


def test_a_retry_waits_for_the_hosts_turn_like_any_request(site):
    site.routes["/flaky"] = [Route(status=503), OK]
    f = fetcher(politeness_delay_s=0.4, fetch_backoff_s=0.01)
    start = time.monotonic()
    assert get(f, f"{site.url}/flaky").status == 200
    # robots.txt, the first attempt, the retry: three turns, 0.4 s apart.
    assert time.monotonic() - start >= 0.8
