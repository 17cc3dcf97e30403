"""A scraper killed mid-run resumes it on restart without fetching again what it had done."""

from __future__ import annotations

import time

import pytest

from pipeline.messages import ArxivSource
from pipeline.settings import KafkaSettings
from tests.support.arxiv_site import REAL_PAPERS, ArxivSite
from tests.support.scraper_rig import ScraperRig

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
def test_stop_mid_run_then_resume_fetches_nothing_twice(stop, broker, test_data, tmp_path):
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    # Slow responses, so that the kill lands with the run well under way.
    with ArxivSite(test_data / "data" / "pdfs", latency_s=0.3) as site:
        env = {
            "SCRAPER_ARXIV_BASE_URL": site.url,
            "SCRAPER_ARXIV_PAGE_SIZE": "4",
            "SCRAPER_MAX_BYTES": str(5 * 1024 * 1024),
            "SCRAPER_DOWNLOAD_CONCURRENCY": "2",
            "SCRAPER_STOP_GRACE_S": "1",
        }
        with ScraperRig(kafka, tmp_path / "blobs", tmp_path / "scraper.log", **env) as rig:
            run_id, offset = rig.submit(ArxivSource(category="all", allow_private=True))
            deadline = time.monotonic() + 60
            while len(rig.outcome(run_id).docs) < 2:  # published (acked) before the kill
                assert time.monotonic() < deadline, "no progress before the kill"
                time.sleep(0.05)
            if stop == "sigkill":
                rig.kill()  # the whole process group, browser included, as a container's
            else:
                rig.terminate()
            killed_at = time.monotonic()
            before = rig.outcome(run_id)
            assert not rig.done(offset), "the request must not be committed mid-run"
            done_before = {d.source.external_id for d in before.docs}
            assert 2 <= len(done_before) < len(REAL_PAPERS)

            rig.start()
            rig.wait(offset)
            after = rig.outcome(run_id)

    assert {d.source.external_id for d in after.docs} == {p.vid for p in REAL_PAPERS}
    assert after.dead == []
    later = [path for t, path in site.log if t > killed_at]
    for vid in done_before:
        arxiv_id = vid.split("v")[0]
        # Neither the abstract page nor the PDF of a paper published before the kill.
        assert f"/abs/{arxiv_id}" not in later and f"/pdf/{vid}" not in later, vid
    # Every PDF was downloaded once, except those in flight at the kill (at most 2).
    pdfs = [n for path, n in site.requests.items() if path.startswith("/pdf/") and n > 1]
    assert len(pdfs) <= 2
