"""Documents per minute from the local arXiv look-alike, 100 ms added to every response:
the scraper with its default settings vs the original project's sequential loop (Selenium
opens the listing and clicks each PDF link, waiting for each download), in the same run.

    python -m benchmarks.scrape

Both walk the same listing of BENCH_SCRAPE_N distinct papers (the real PDFs of
$DISTILLERY_TEST_DATA/data/pdfs, each made unique by a trailing comment) with a warm browser
and the politeness delay at 0. The scraper's figure includes what the baseline does not do:
an abstract page per paper for its metadata, and storing each PDF in the blob store (fsync'd).
Runs alternate, REPEATS of each; medians count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client import CollectorRegistry
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from pipeline.messages import ArxivSource, SourceRequest
from pipeline.settings import BlobSettings, KafkaSettings
from services.scraper.browser import CHROMIUM_FLAGS, Browser
from services.scraper.config import ScraperSettings
from services.scraper.core import Policy
from services.scraper.main import make_context, make_handler
from tests.support.arxiv_site import REAL_PAPERS, ArxivSite, Paper

N = int(os.environ.get("BENCH_SCRAPE_N", "40"))
REPEATS = int(os.environ.get("BENCH_SCRAPE_REPEATS", "3"))
LATENCY_S = 0.1
DATA = Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared")) / "data" / "pdfs"


def corpus(n: int) -> list[Paper]:
    """n distinct papers cycling through the real ones, under new ids in one category."""
    return [
        replace(
            REAL_PAPERS[i % len(REAL_PAPERS)],
            arxiv_id=f"2501.{i:05d}",
            version=1,
            categories=("cs.CL",),
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class Site:
    url: str


def ours(site: Site, browser: Browser) -> tuple[float, int]:
    """The scraper's handler as the service runs it, default settings but the delay."""
    with tempfile.TemporaryDirectory() as blobs:
        settings = ScraperSettings(
            kafka=KafkaSettings(bootstrap_servers="unused:9092"),
            blobs=BlobSettings(store_uri=Path(blobs).as_uri()),
            arxiv_base_url=site.url,
            politeness_delay_s=0,
        )
        ctx = make_context(settings, CollectorRegistry())
        ctx.browser = browser  # warm, shared with every run
        request = SourceRequest(
            run_id="bench", source=ArxivSource(category="cs.CL", max_papers=N, allow_private=True)
        )

        async def scrape() -> int:
            return len([doc async for doc in make_handler(ctx)(request)])

        start = time.perf_counter()
        docs = asyncio.run(scrape())
        return time.perf_counter() - start, docs


def baseline_driver(downloads: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={downloads.parent / 'profile'}")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "plugins.always_open_pdf_externally": True,  # download, do not render
        },
    )
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    # Headless Chromium drops downloads unless told where they go.
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return driver


def downloaded(folder: Path) -> int:
    """Finished downloads (Chromium writes to NAME.crdownload, then renames)."""
    return sum(1 for p in folder.iterdir() if p.suffix != ".crdownload")


def baseline(site: Site, driver: webdriver.Chrome, downloads: Path) -> tuple[float, int]:
    """The original loop: open the listing, click each PDF link, wait for its download."""
    start = time.perf_counter()
    driver.get(f"{site.url}/list/cs.CL/recent?skip=0&show=50")
    done = 0
    while True:
        links = driver.find_elements(By.CSS_SELECTOR, 'dt a[title="Download PDF"]')
        for link in links:
            link.click()
            done += 1
            while downloaded(downloads) < done:
                time.sleep(0.02)
        nxt = driver.find_elements(By.CSS_SELECTOR, ".paging a")
        later = [a for a in nxt if int(a.text.split("-")[0]) > done]
        if not later or done >= N:
            break
        driver.get(later[0].get_attribute("href"))
    return time.perf_counter() - start, done


def serve(url: multiprocessing.queues.Queue[str], stop: multiprocessing.synchronize.Event) -> None:
    """The look-alike in a process of its own, so that its threads do not share a GIL with
    the scraper being measured (the baseline's work happens in Chromium's processes)."""
    site = ArxivSite(DATA, papers=corpus(N), latency_s=LATENCY_S, salt_pdfs=True, robots="")
    with site:
        url.put(site.url)
        stop.wait()


def main() -> None:
    browser = Browser("/usr/bin/chromium", "/usr/bin/chromedriver", "bench", 60)
    ours_runs, base_runs = [], []
    urls: multiprocessing.queues.Queue[str] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(urls, stop), daemon=True)
    server.start()
    site = Site(urls.get(timeout=30))
    with tempfile.TemporaryDirectory() as tmp, contextlib.closing(browser):
        # Warm: both start with a running browser.
        browser.render(site.url + "/robots.txt", Policy.for_urls([site.url], allow_private=True))
        for r in range(REPEATS):
            seconds, docs = ours(site, browser)
            assert docs == N, f"scraper published {docs} of {N}"
            ours_runs.append(N / seconds * 60)
            downloads = Path(tmp) / f"run{r}" / "downloads"
            downloads.mkdir(parents=True)
            driver = baseline_driver(downloads)
            try:
                driver.get(site.url + "/robots.txt")
                seconds, docs = baseline(site, driver, downloads)
            finally:
                driver.quit()
            assert docs == N, f"baseline downloaded {docs} of {N}"
            base_runs.append(N / seconds * 60)
            print(
                f"run {r + 1}: scraper {ours_runs[-1]:.0f} docs/min, "
                f"baseline {base_runs[-1]:.0f} docs/min",
                flush=True,
            )
    stop.set()
    server.join(10)
    ours_med, base_med = statistics.median(ours_runs), statistics.median(base_runs)
    print(
        json.dumps(
            {
                "docs_per_min": round(ours_med),
                "baseline_docs_per_min": round(base_med),
                "speedup": round(ours_med / base_med, 2),
                "n": N,
                "latency_ms": int(LATENCY_S * 1000),
                "repeats": REPEATS,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
