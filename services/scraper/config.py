"""The scraper's settings, from SCRAPER_* variables (and the shared KAFKA_/BLOB_ ones)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pipeline import topics
from pipeline.settings import ServiceSettings


class ScraperSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCRAPER_", frozen=True, extra="ignore")

    service_name: str = "scraper"
    input_topic: str = topics.SOURCES

    #: Where arXiv is; tests and mirrors point it elsewhere.
    arxiv_base_url: str = "https://arxiv.org"
    #: Entries per arXiv listing or search page (arXiv accepts 25, 50, 100, 200).
    arxiv_page_size: int = Field(50, ge=1)
    #: Sent with every request, with `contact`: arXiv and site owners ask for a way to reach
    #: whoever runs a crawler.
    user_agent: str = "distillery-scraper/0.1"
    #: An e-mail address (or URL) for the User-Agent; main.py warns when it is empty.
    contact: str = ""

    #: Requests in flight at once, across hosts (Scrapy's default too); the politeness delay
    #: still spaces the requests to any one host.
    download_concurrency: int = Field(16, ge=1)
    #: Seconds between two requests to the same host, unless `host_delays` says otherwise.
    politeness_delay_s: float = Field(1.0, ge=0)
    #: Per registered domain; arXiv asks for one request every 3 s.
    host_delays: dict[str, float] = {"arxiv.org": 3.0}
    #: Documents larger than this are aborted while streaming.
    max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    #: Seconds without progress on a connection or read before a request is retried...
    timeout_s: float = Field(30.0, gt=0)
    #: ...and seconds one whole download may take.
    download_timeout_s: float = Field(300.0, gt=0)
    #: Attempts per request on 429, 5xx and timeouts before the request counts as failed.
    fetch_attempts: int = Field(4, ge=1)
    fetch_backoff_s: float = Field(1.0, ge=0)
    fetch_backoff_max_s: float = Field(60.0, gt=0)
    max_redirects: int = Field(5, ge=0)
    respect_robots: bool = True

    #: Directories a folder source may read (and anything below them); empty allows any
    #: path the service can read. Set it where untrusted producers can write to `sources`.
    folder_roots: list[str] = []

    chromium_path: str = "/usr/bin/chromium"
    chromedriver_path: str = "/usr/bin/chromedriver"
    #: Seconds a page may take to render in the browser.
    render_timeout_s: float = Field(30.0, gt=0)

    @property
    def agent(self) -> str:
        return f"{self.user_agent} (+{self.contact})" if self.contact else self.user_agent

    def delay_for(self, domain: str) -> float:
        return self.host_delays.get(domain, self.politeness_delay_s)
