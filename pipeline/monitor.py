"""Where every stage of the pipeline stands: messages in and out of each service, its lag and
its dead letters from the topics' offsets, and its retries and own figures (tokens, cost, loss,
verdicts) from the Prometheus metrics it exports, the ones Grafana's dashboard draws.

`distillery topics` prints one observation; `distillery run` and `topics --watch` redraw one a
second. Counts are since `baseline` (the topics' ends when a run began) when one is given.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from pipeline import bus, topics
from pipeline.embedded import SERVICES, StackState
from pipeline.settings import KafkaSettings

#: (service, topic in, topic out); inference's output is its gRPC answers.
STAGES: tuple[tuple[str, str, str | None], ...] = tuple(
    (service, topic, out)
    for service, topic, out in zip(SERVICES, topics.PIPELINE, (*topics.PIPELINE[1:], None),
                                   strict=True)
)  # fmt: skip

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@dataclass(frozen=True)
class Flow:
    """One stage at one moment."""

    service: str
    topic_in: str
    topic_out: str | None
    #: Messages on the input topic, and those the service's group has committed.
    arrived: int
    handled: int
    #: Messages on the output topic and on the input's dead-letter topic.
    produced: int
    dead: int
    #: From the service's metrics: None when no endpoint answered (a deployed stack's are
    #: Prometheus's to scrape). Counters restart with a restarted process, as in Grafana.
    retries: int | None = None
    detail: str = ""

    @property
    def lag(self) -> int:
        return max(0, self.arrived - self.handled)


@dataclass(frozen=True)
class Observation:
    at: float
    flows: list[Flow]
    #: The ends of every pipeline topic and DLQ (a run's baseline, when it begins).
    ends: dict[str, int] = field(default_factory=dict)


def topic_ends(settings: KafkaSettings) -> dict[str, int]:
    """Messages each pipeline topic and DLQ holds (the sum of its partitions' ends)."""
    reader = bus.consumer(settings, group_id=None)
    try:
        names = set(reader.topics())
        tps = [tp for name in topics.all_topics() if name in names
               for tp in bus.partitions_of(reader, name)]  # fmt: skip
        ends = bus.end_offsets(reader, tps)
    finally:
        reader.close()
    out: dict[str, int] = defaultdict(int)
    for tp, end in ends.items():
        out[tp.topic] += end
    return dict(out)


def committed(settings: KafkaSettings) -> dict[str, dict[str, int]]:
    """Each stage's committed offsets on its input topic, summed over partitions. Inference
    replicas each read everything in a group of their own, new at each start: the furthest
    ahead counts (a restarted replica's old group stays behind for good)."""
    per_group = bus.groups_committed(settings)
    out: dict[str, dict[str, int]] = {}
    for service, topic, _out in STAGES:
        sums = [sum(v for tp, v in offsets.items() if tp.topic == topic)
                for gid, offsets in per_group.items()
                if gid == service or gid.startswith(f"{service}-")]  # fmt: skip
        if sums:
            out[service] = {topic: max(sums)}
    return out


def scrape(urls: Mapping[str, list[str]], timeout_s: float = 1.0) -> dict[str, Samples]:
    """Each service's metrics, summed over its replicas: {service: {sample name: {labels:
    value}}}. A replica that does not answer (restarting, say) is left out."""
    out: dict[str, Samples] = {}
    for service, endpoints in urls.items():
        samples: Samples = defaultdict(lambda: defaultdict(float))
        for url in endpoints:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - our loopback endpoints
                    text = response.read().decode("utf-8")
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "service"))
                    samples[s.name][labels] += s.value
        if samples:
            out[service] = samples
    return out


def endpoints(state: StackState | None) -> dict[str, list[str]]:
    """The embedded stack's metrics endpoints, by service."""
    out: dict[str, list[str]] = defaultdict(list)
    for name, info in (state.services if state else {}).items():
        if info.get("metrics"):
            out[name.rsplit("-", 1)[0]].append(str(info["metrics"]))
    return dict(out)


def observe(
    settings: KafkaSettings,
    metrics_urls: Mapping[str, list[str]] | None = None,
    baseline: Mapping[str, int] | None = None,
) -> Observation:
    """Every stage now; counts since `baseline` when given."""
    ends = topic_ends(settings)
    done = committed(settings)
    metrics = scrape(metrics_urls or {})
    base = baseline or {}

    def since(topic: str, value: int) -> int:
        return max(0, value - base.get(topic, 0))

    flows = []
    for service, topic, out in STAGES:
        arrived = since(topic, ends.get(topic, 0))
        handled = min(arrived, since(topic, done.get(service, {}).get(topic, 0)))
        samples = metrics.get(service)
        flows.append(Flow(
            service=service, topic_in=topic, topic_out=out, arrived=arrived, handled=handled,
            produced=since(out, ends.get(out, 0)) if out else _total(samples, "requests"),
            dead=since(topics.dlq(topic), ends.get(topics.dlq(topic), 0)),
            retries=int(_total(samples, "retries")) if samples else None,
            detail=describe(service, samples) if samples else "",
        ))  # fmt: skip
    return Observation(at=time.monotonic(), flows=flows, ends=ends)


def _total(samples: Samples | None, name: str, **where: str) -> int:
    if not samples:
        return 0
    total = 0.0
    for labels, value in samples.get(f"distillery_{name}_total", {}).items():
        if all((k, v) in labels for k, v in where.items()):
            total += value
    return int(total)


def _gauge(samples: Samples, name: str) -> float:
    return sum(samples.get(f"distillery_{name}", {}).values())


def describe(service: str, samples: Samples) -> str:
    """A service's own figures, in a few words."""
    if service == "scraper":
        return f"{_total(samples, 'scraper_bytes') / 1e6:.1f} MB downloaded"
    if service == "extractor":
        return (f"{_total(samples, 'extractor_pages')} pages, "
                f"{_total(samples, 'extractor_chunks')} chunks")  # fmt: skip
    if service == "synthesizer":
        tokens = _total(samples, "synthesizer_tokens")
        cost = sum(samples.get("distillery_synthesizer_cost_usd_total", {}).values())
        rejected = _total(samples, "synthesizer_rejected")
        return f"{tokens:,} tokens, ${cost:.4f}, {rejected} rejected"
    if service == "trainer":
        total = _gauge(samples, "trainer_total_steps")
        if not total:
            return f"{_total(samples, 'trainer_pairs_stored')} pairs stored"
        step, loss = _gauge(samples, "trainer_step"), _gauge(samples, "trainer_loss")
        eta = _gauge(samples, "trainer_eta_seconds")
        return f"step {step:.0f}/{total:.0f}, loss {loss:.3f}, ETA {eta:.0f}s"
    if service == "evaluator":
        verdicts = {v: _total(samples, "evaluator_verdicts", verdict=v)
                    for v in ("promote", "reject")}  # fmt: skip
        return ", ".join(f"{n} {v}" for v, n in verdicts.items() if n) or "no verdict yet"
    if service == "inference":
        return f"{_total(samples, 'inference_tokens')} tokens generated"
    return ""


def table(
    now: Observation,
    before: Observation | None = None,
    states: Mapping[str, str] | None = None,
) -> Table:
    """The stages as a table; with `before`, each stage's output rate between the two; with
    `states`, a run's state of each stage."""
    grid = Table("stage", *(["state"] if states else []), "in", "handled", "out", "rate/s",
                 "lag", "dlq", "retries", "", title=None)  # fmt: skip
    previous = {f.service: f for f in before.flows} if before else {}
    for flow in now.flows:
        rate = ""
        if flow.service in previous and now.at > before.at:  # type: ignore[union-attr]
            made = flow.produced - previous[flow.service].produced
            rate = f"{max(0, made) / (now.at - before.at):.1f}"  # type: ignore[union-attr]
        row = [f"{flow.service}\n[dim]{flow.topic_in} → {flow.topic_out or 'gRPC'}[/dim]"]
        if states:
            row.append(_STATE_STYLE.get(states.get(flow.service, ""), "").format(
                states.get(flow.service, "")))  # fmt: skip
        row += [str(flow.arrived), str(flow.handled), str(flow.produced), rate,
                f"[yellow]{flow.lag}[/yellow]" if flow.lag else "0",
                f"[red]{flow.dead}[/red]" if flow.dead else "0",
                "-" if flow.retries is None else str(flow.retries), flow.detail]  # fmt: skip
        grid.add_row(*row)
    return grid


_STATE_STYLE = {
    "running": "[bold cyan]{}[/bold cyan]",
    "done": "[green]{}[/green]",
    "failed": "[bold red]{}[/bold red]",
    "waiting": "[dim]{}[/dim]",
}
