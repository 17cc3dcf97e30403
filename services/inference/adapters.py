"""Adapters into the engine and the model table, from the blob store or a local directory:
for LoadAdapter and for promotions from `eval-results`."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from pipeline.blobstore import BlobStore, get_tree, name_of
from pipeline.errors import BadInput
from services.inference.core import InvalidArgument, Model, Models, NotFound, check_adapter_name
from services.inference.engine import Engine

log = logging.getLogger("inference.adapters")


class Adapters:
    """Loads adapters into the engine, then names them in the model table."""

    def __init__(self, engine: Engine, models: Models, blobs: BlobStore, directory: Path) -> None:
        self.engine = engine
        self.models = models
        self.blobs = blobs
        self.directory = directory

    async def load(self, adapter: Model, *, make_latest: bool) -> Model:
        check_adapter_name(adapter.name)  # before anything: it names a directory too
        local = Path(adapter.adapter_uri)
        if not local.is_dir():
            local = self.directory / adapter.name
            try:
                name = name_of(self.blobs, adapter.adapter_uri)
                await asyncio.to_thread(_fetch, self.blobs, name, local)
            except BadInput as exc:
                raise NotFound(f"no adapter at {adapter.adapter_uri}: {exc}") from None
        if not (local / "adapter_config.json").is_file():
            raise InvalidArgument(f"{adapter.adapter_uri} holds no peft adapter "
                                  "(adapter_config.json)")  # fmt: skip
        await self.engine.load_adapter(adapter.name, local)
        self.models.add(adapter, make_latest=make_latest)
        log.info("adapter %s loaded from %s%s", adapter.name, adapter.adapter_uri,
                 " as latest" if make_latest else "")  # fmt: skip
        return adapter

    async def unload(self, name: str) -> None:
        model = self.models.remove(name)  # unknown first: NOT_FOUND before the engine is asked
        await self.engine.unload_adapter(model.name)


def _fetch(blobs: BlobStore, name: str, directory: Path) -> None:
    """The adapter's files alone in `directory` (an earlier one of that name removed)."""
    shutil.rmtree(directory, ignore_errors=True)
    get_tree(blobs, name, directory)
