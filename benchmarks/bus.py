"""Pass-through messages/s through the worker loop on the embedded broker (1 and 2 workers),
and the loss count when a worker is SIGKILLed mid-stream.

    python -m benchmarks.bus

1 KiB values, acks=all, 12 partitions. A run is timed from the first output's broker
timestamp to the moment the group has committed every input, so consumer-group start-up is
excluded and commit/ack latency is included. Each setting runs REPEATS times; the median counts.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pipeline import bus
from pipeline.embedded import Broker
from pipeline.settings import KafkaSettings
from tests.support.bus_harness import TopicReader, kill_run, produce, start_worker

N = int(os.environ.get("BENCH_BUS_N", "40000"))
REPEATS = int(os.environ.get("BENCH_BUS_REPEATS", "3"))
PARTITIONS = 12


def topics_for(settings: KafkaSettings) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    a, b = f"bench-a-{tag}", f"bench-b-{tag}"
    bus.ensure_topics(settings, {a: PARTITIONS, b: PARTITIONS, a + ".dlq": 1})
    return a, b


def throughput(settings: KafkaSettings, workers: int, log: Path) -> float:
    a, b = topics_for(settings)
    produce(settings, a, N, payload_bytes=1024)
    group = f"{a}-workers"
    procs = [start_worker(settings, a, b, group, log=log) for _ in range(workers)]
    try:
        deadline = time.time() + 300
        while sum(bus.committed(settings, group).values()) < N:
            if time.time() > deadline:
                raise TimeoutError(f"{workers} worker(s) did not finish {N} messages")
            time.sleep(0.05)
        done = time.time()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    reader = TopicReader(settings, b)
    reader.read_until(lambda r: len(r.records) >= N, 60)
    reader.close()
    first = min(r.timestamp for r in reader.records) / 1000
    return N / (done - first)


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    log = Path(tempfile.mkdtemp(prefix="bench-bus-")) / "workers.log"
    with Broker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(REPEATS):
            for workers in (1, 2):  # interleaved, so drift on a noisy machine hits both
                rate = throughput(settings, workers, log)
                rates[workers].append(rate)
                print(f"{workers} worker(s): {rate:,.0f} msg/s", file=sys.stderr)
        a, b = topics_for(settings)
        chaos = kill_run(settings, a, b, n=10_000, kills=3)
        print(
            f"kill run: {chaos.kills} SIGKILLs, lost {len(chaos.lost)}, "
            f"duplicates {chaos.duplicates}",
            file=sys.stderr,
        )
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        json.dumps(
            {
                "msgs_per_s_1": round(one),
                "msgs_per_s_2": round(two),
                "scaling_2_over_1": round(two / one, 2),
                "lost": len(chaos.lost),
                "dup_ratio": round(chaos.dup_ratio, 4),
                "n": N,
                "repeats": REPEATS,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
