"""Requests/min the synthesizer sustains against a rate-limited provider, vs the original
project's sequential loop, in the same run against the same server.

    python -m benchmarks.synthesize

The provider is the fake of the paid API (tests/support/fake_llm.py) in its own process:
300 ms per completion, 3,000 requests/min enforced as the real APIs do (one second's worth at
a time), 429 with Retry-After beyond it. A sequential loop can reach at most 200/min.

- baseline: the original project's loop: for each chunk, one blocking chat completion with
  the triples prompt through the openai SDK, then parse; run for BENCH_SYNTH_SEQ_S seconds.
- this service: one replica (`python -m services.synthesizer`, default concurrency) on the
  embedded broker, parsed-text over 12 partitions, SYNTHESIZER_REQUESTS_PER_MINUTE=3000. The
  rate counts completions the server admitted during the first BENCH_SYNTH_WINDOW_S seconds
  from the first one; the run then continues until every chunk is committed, and each chunk
  must be accounted for: pairs, a dead letter, or counted as rejected ("lost" otherwise).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai

from pipeline.embedded import Broker, free_port
from pipeline.messages import ParsedChunk
from pipeline.settings import KafkaSettings
from services.synthesizer.parse import Malformed, parse_answer
from services.synthesizer.prompts import load_prompt
from tests.support.synthesizer_rig import SynthesizerRig, chunk, env_for, paper_chunks

LIMIT_RPM = 3000
LATENCY_S = 0.3
WINDOW_S = float(os.environ.get("BENCH_SYNTH_WINDOW_S", "120"))
SEQ_S = float(os.environ.get("BENCH_SYNTH_SEQ_S", "30"))
KEY = "bench-key"


def corpus(n: int) -> list[ParsedChunk]:
    """`n` chunks of real paper text, the papers' ~640 repeated; every sentence of chunk i
    is marked "[i]" so that no two chunks give the same pair (the duplicate filter would
    otherwise drop most of them and hide the work done)."""
    root = (Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared")) / "data" / "pdfs").resolve()
    texts = [c.text for c in paper_chunks(root)]
    return [
        chunk(
            re.sub(r"\.(\s|$)", f" [{i}].\\1", texts[i % len(texts)]),
            doc=f"bench-{i}",
            run_id="bench",
        )
        for i in range(n)
    ]


def sequential(base_url: str, chunks: list[ParsedChunk], seconds: float) -> float:
    """The original project's loop, requests/min."""
    client = openai.OpenAI(api_key=KEY, base_url=base_url)
    prompt = load_prompt("triples-v1")
    done = 0
    start = time.monotonic()
    for c in chunks:
        if time.monotonic() - start >= seconds:
            break
        user = prompt.render(
            "user", format=prompt.formats["text"], title="", section="", text=c.text
        )
        answer = client.chat.completions.create(
            model="fake-model",
            messages=[
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": user},
            ],  # fmt: skip
            temperature=0.7,
            max_tokens=1024,
        )
        try:
            parse_answer(answer.choices[0].message.content)
        except Malformed:
            pass
        done += 1
    return done / (time.monotonic() - start) * 60


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fake_llm",
            "--port",
            str(port),
            "--key",
            KEY,
            "--latency",
            str(LATENCY_S),
            "--rpm",
            str(LIMIT_RPM),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("ready")
        url = f"http://127.0.0.1:{port}"
        n = int(LIMIT_RPM * (WINDOW_S + 30) / 60)
        chunks = corpus(n)
        seq_rpm = sequential(f"{url}/v1", chunks, SEQ_S)
        print(f"sequential loop: {seq_rpm:.0f} requests/min", file=sys.stderr)
        base = stats(url)
        with Broker() as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            env = env_for(f"{url}/v1", KEY, SYNTHESIZER_REQUESTS_PER_MINUTE=str(LIMIT_RPM))
            with SynthesizerRig(kafka, home, partitions=12, **env) as rig:
                pairs, dead = rig.run(chunks, timeout_s=WINDOW_S * 3 + 120)
                rejected = rig.metric("distillery_synthesizer_chunks_total", outcome="no_pairs")
        after = stats(url)
    finally:
        server.terminate()
        server.wait(30)

    admitted = sorted(after["accepted_at"])[len(base["accepted_at"]) :]
    first = admitted[0]
    in_window = sum(1 for t in admitted if t - first < WINDOW_S)
    rpm = in_window / WINDOW_S * 60
    requests = after["requests"] - base["requests"]
    limited = after["rate_limited"] - base["rate_limited"]
    accounted = len({p.chunk_id for p in pairs}) + len(dead) + int(rejected)
    print(
        f"service: {rpm:.0f} requests/min over {WINDOW_S:.0f}s, {len(pairs)} pairs, "
        f"{len(dead)} dead letters, {int(rejected)} chunks without pairs, "
        f"{limited} of {requests} requests answered 429",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "achieved_rpm": round(rpm),
                "limit_rpm": LIMIT_RPM,
                "fraction_of_limit": round(rpm / LIMIT_RPM, 3),
                "speedup_vs_sequential": round(rpm / seq_rpm, 1),
                "lost": n - accounted,
                "rate_429": round(limited / requests, 4),
                "sequential_rpm": round(seq_rpm),
                "window_s": WINDOW_S,
                "chunks": n,
                "pairs": len(pairs),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
