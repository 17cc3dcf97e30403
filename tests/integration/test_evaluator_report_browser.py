"""The evaluation report as people see it: rendered by headless Chromium from its file, a
screenshot taken, and the tables and the chart laid out on the page."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from services.evaluator.report import render_html
from services.scraper.browser import CHROMIUM_FLAGS
from tests.support.reports import sample_report

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chromium() -> Iterator[webdriver.Chrome]:
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2000"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def test_the_report_renders_with_its_tables_and_chart(
    chromium: webdriver.Chrome, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(sample_report()), encoding="utf-8")
    chromium.get(page.as_uri())
    shot = tmp_path / "report.png"
    assert chromium.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    assert chromium.title == "Evaluation of ckpt-1"
    assert chromium.find_element(By.ID, "verdict").text.startswith("promoted:")
    rows = chromium.find_elements(By.CSS_SELECTOR, "#scores tbody tr")
    assert len(rows) == 4 and all(r.size["height"] > 0 for r in rows)
    chart = chromium.find_element(By.ID, "chart")
    assert chart.size["width"] == 640 and chart.size["height"] > 100
    bars = chromium.find_elements(By.CSS_SELECTOR, "#chart rect")
    assert len(bars) == 4 and all(b.size["width"] >= 1 for b in bars)
    # The better bar is green, the worse red, the one with no interval grey.
    assert [b.get_attribute("fill") for b in bars] == ["#137333", "#b3261e", "#137333", "#888"]
    assert len(chromium.find_elements(By.CSS_SELECTOR, "#improved tbody tr")) == 2
    # Text from models stays text: no script element came of it.
    assert chromium.find_elements(By.TAG_NAME, "script") == []
    assert "<script>alert('x')</script>" in chromium.find_element(By.ID, "improved").text
