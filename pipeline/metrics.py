"""The Prometheus metrics every service reports, with the same names and labels everywhere."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

NAMESPACE = "distillery"


class WorkerMetrics:
    """The worker loop's metrics for one process, labelled by service so replicas stack.

    Services register their own (tokens, cost, loss) in the registry they hand the worker
    (`run_service(..., registry=)`), so one endpoint serves all.
    """

    def __init__(
        self, service: str, input_topic: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(
                name, doc, ["service", *labels], namespace=NAMESPACE, registry=self.registry
            )

        self.consumed = counter("consumed", "Messages read from the input topic", "topic").labels(
            service, input_topic
        )
        self._produced = counter("produced", "Messages acknowledged on output topics", "topic")
        self._dlq = counter("dlq", "Messages sent to a dead-letter topic", "topic", "reason")
        self.retries = counter("retries", "Handler attempts retried after transient errors").labels(
            service
        )
        self.handle_seconds = Histogram(
            "handle_seconds",
            "Seconds in the service's handler per message",
            ["service"],
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 1, 2.5, 5, 15, 60, 300),
        ).labels(service)
        self._lag = Gauge(
            "consumer_lag",
            "Messages behind the end of each input partition",
            ["service", "topic", "partition"],
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def produced(self, topic: str, n: int = 1) -> None:
        self._produced.labels(self.service, topic).inc(n)

    def dead_lettered(self, topic: str, reason: str) -> None:
        self._dlq.labels(self.service, topic, reason).inc()

    def lag(self, topic: str, partition: int, value: int) -> None:
        self._lag.labels(self.service, topic, str(partition)).set(value)

    def forget_lag(self, topic: str, partition: int) -> None:
        """A partition that moved away: its new owner reports its lag (a frozen value here
        would count it twice in a group's sum)."""
        try:
            self._lag.remove(self.service, topic, str(partition))
        except KeyError:
            pass  # never reported here

    def serve(self, port: int) -> int:
        """Expose /metrics on `port` (0 = any free port); returns the bound port."""
        server, _thread = start_http_server(port, registry=self.registry)
        return int(server.server_port)
