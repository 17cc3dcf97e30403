"""Wall time of the demo pipeline on the 13 shared PDFs, with a per-stage breakdown.

    OMP_NUM_THREADS=1 python -m benchmarks.e2e

Runs `distillery demo` as `make demo` does (the embedded broker, every service a process of
its own, stories260K, the reading-comprehension generator, LoRA on CPU, evaluation, the
promoted adapter served) in a scratch home, and reads the summary it writes. Target: 10
minutes on 2 cores. Last line: JSON with the wall time, the counts and each stage's seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.cli_stages import Summary

TARGET_S = 600


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "demo"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--home", str(home)],  # noqa: S603
                       check=True, env={**os.environ, "COLUMNS": "120"})  # fmt: skip
        wall_s = time.monotonic() - started
        summary = Summary.model_validate_json((home / "summary.json").read_text())
    counts = {k: v for stage in summary.stages for k, v in stage.counts.items()}
    print(f"{'stage':<18}{'seconds':>9}")
    for stage in summary.stages:
        print(f"{stage.name:<18}{stage.seconds:>9.1f}")
    print(f"{'whole':<18}{wall_s:>9.1f}   (target {TARGET_S} s)", flush=True)
    print(json.dumps({
        "wall_s": round(wall_s, 1), "docs": counts.get("documents"), "chunks": counts.get("chunks"),
        "pairs": counts.get("pairs"), "verdict": summary.verdict,
        "stages": {stage.name: stage.seconds for stage in summary.stages},
        "dead_lettered": summary.dead_lettered, "target_s": TARGET_S,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
