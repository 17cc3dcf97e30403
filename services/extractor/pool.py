"""Worker processes with limits: a document that runs too long has its process killed and
replaced, one that needs too much memory fails inside its process, and neither touches the
service or the other documents in flight.

pebble's ProcessPool gives the per-task timeout that concurrent.futures lacks (there a hung
task holds its worker forever). The memory limit is the worker's address space (RLIMIT_AS), so
an allocation past it raises MemoryError in the worker instead of waking the kernel's OOM killer.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import select
import threading
from concurrent.futures import TimeoutError as FutureTimeout

from pebble import ProcessExpired, ProcessPool

from pipeline.errors import BadInput, Retryable
from services.extractor.extract import Extraction, Options, counter, extract


class Extractors:
    def __init__(
        self, workers: int, memory_limit_bytes: int, timeout_s: float, options: Options
    ) -> None:
        self.timeout_s = timeout_s
        self.options = options
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that has imported pypdf, lxml and trafilatura once, so a
        # replacement for a killed worker is ready in milliseconds; and none inherits the
        # Kafka client's threads, as a plain fork of the service would.
        context.set_forkserver_preload(["services.extractor.extract"])
        self._pool = ProcessPool(
            max_workers=workers,
            initializer=_start_worker,
            initargs=(memory_limit_bytes, options.tokenizer, os.getpid()),
            context=context,
        )

    async def extract(self, data: bytes, content_type: str) -> Extraction:
        future = self._pool.schedule(
            extract, args=(data, content_type, self.options), timeout=self.timeout_s
        )
        try:
            return await asyncio.wrap_future(future)
        except FutureTimeout:
            raise BadInput(
                f"extraction took longer than {self.timeout_s:g}s (worker killed)",
                reason="timeout",
            ) from None
        except ProcessExpired as exc:
            # Killed from outside (the OOM killer for another's sake) or crashed on this file:
            # retried, and dead-lettered as `worker_died` if it keeps happening.
            raise Retryable(
                f"the worker process died while extracting (exit code {exc.exitcode})",
                reason="worker_died",
            ) from None

    def close(self) -> None:
        self._pool.stop()  # type: ignore[no-untyped-call]  # in-flight documents are abandoned uncommitted: they come back
        self._pool.join()


def _start_worker(memory_limit_bytes: int, tokenizer: str | None, service_pid: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    threading.Thread(target=_exit_with, args=(service_pid,), daemon=True).start()
    counter(tokenizer)  # load it now, not during the first document's time limit


def _exit_with(service_pid: int) -> None:
    """Exit when the service does. Were it killed (SIGKILL, the OOM killer), a worker busy on a
    slow document would run on forever: the timer that kills it lived in the service."""
    try:
        watch = os.pidfd_open(service_pid)
    except ProcessLookupError:
        os._exit(1)
    select.select([watch], [], [])  # readable once the process has exited
    os._exit(1)
