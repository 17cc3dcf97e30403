"""Headless Chromium through Selenium, for pages that need a real browser (arXiv listings and
search results, JavaScript-built sites). One browser per process, one page at a time."""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service

from pipeline.errors import BadInput, Retryable
from services.scraper.core import Policy
from services.scraper.proxy import PolicyProxy

log = logging.getLogger("scraper.browser")

#: Flags that let Chromium run headless as root in a container and keep it off the network
#: except for the pages it is sent to (no update checks, sync or QUIC probes).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--blink-settings=imagesEnabled=false",
)


@dataclass(frozen=True)
class Page:
    url: str  # where the browser ended up, after any redirect
    html: str


class Browser:
    def __init__(self, chromium: str, chromedriver: str, user_agent: str, timeout_s: float) -> None:
        self._chromium = chromium
        self._chromedriver = chromedriver
        self._user_agent = user_agent
        self._timeout_s = timeout_s
        self._driver: webdriver.Chrome | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._proxy: PolicyProxy | None = None
        self._lock = threading.Lock()

    def render(self, url: str, policy: Policy) -> Page:
        """Load `url`, let its scripts run, return the resulting DOM. Every request the page
        makes (redirects, scripts, XHRs) must pass `policy`. Blocking: call it from a thread
        (`asyncio.to_thread`)."""
        with self._lock:
            try:
                driver, proxy = self._start()
                proxy.allow(policy)
                driver.get(url)
                final = driver.current_url
                if urlsplit(final).hostname in proxy.refused:
                    # Redirected or sent where the policy forbids: what shows is an error page.
                    raise BadInput(f"{url}: the page went on to {final}", reason="redirect_refused")
                return Page(final, driver.page_source)
            except TimeoutException:
                raise Retryable(f"{url}: page did not load in {self._timeout_s:.0f}s") from None
            except WebDriverException as exc:
                # A crashed or wedged browser: start a fresh one on the next call.
                self._stop()
                raise Retryable(f"{url}: browser failed: {exc.msg}", reason="browser") from None
            finally:
                if self._proxy is not None:
                    self._proxy.allow(None)  # between pages, the browser may fetch nothing

    def _start(self) -> tuple[webdriver.Chrome, PolicyProxy]:
        if self._proxy is None:
            self._proxy = PolicyProxy()
        if self._driver is None:
            self._profile = tempfile.TemporaryDirectory(prefix="distillery-chromium-")
            options = webdriver.ChromeOptions()
            options.binary_location = self._chromium
            for flag in CHROMIUM_FLAGS:
                options.add_argument(flag)
            options.add_argument(f"--user-data-dir={self._profile.name}")
            # Every request through the policy proxy, loopback included (Chromium sends
            # loopback direct unless told not to).
            options.add_argument(f"--proxy-server=http://127.0.0.1:{self._proxy.port}")
            options.add_argument("--proxy-bypass-list=<-loopback>")
            options.add_argument(f"--user-agent={self._user_agent}")
            # An explicit driver path: otherwise Selenium Manager tries to download one.
            self._driver = webdriver.Chrome(
                service=Service(executable_path=self._chromedriver), options=options
            )
            self._driver.set_page_load_timeout(self._timeout_s)
            log.info("browser started")
        return self._driver, self._proxy

    def _stop(self) -> None:
        if self._driver is not None:
            try:
                self._driver.quit()
            except WebDriverException as exc:
                log.warning("browser did not quit cleanly: %s", exc.msg)
            self._driver = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    def close(self) -> None:
        with self._lock:
            self._stop()
            if self._proxy is not None:
                self._proxy.close()
                self._proxy = None
