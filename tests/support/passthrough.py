"""A throwaway pass-through service for testing the worker loop: Item in, the same Item out.

Run as `python -m tests.support.passthrough` with PASSTHROUGH_INPUT_TOPIC/OUTPUT_TOPIC set.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar, Literal

from pydantic_settings import SettingsConfigDict

from pipeline.errors import BadInput
from pipeline.messages import Message
from pipeline.settings import ServiceSettings, load
from pipeline.worker import run_service


class Item(Message):
    SCHEMA = "item/1"
    TOPIC: ClassVar[str] = ""  # routed to PASSTHROUGH_OUTPUT_TOPIC
    KEY_FIELD = "id"

    id: str
    payload: str = ""


class PassthroughSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PASSTHROUGH_", frozen=True, extra="ignore")

    service_name: str = "passthrough"
    output_topic: str
    mode: Literal["sync", "async"] = "sync"
    #: Seconds each message takes, to make a kill land mid-stream.
    delay_s: float = 0.0


def make_handlers(settings: PassthroughSettings):  # noqa: ANN201 - two closures, one per mode
    def check(item: Item) -> list[Item]:
        if item.payload == "poison":
            raise BadInput("payload is poison", reason="poison")
        return [item]

    def handle(item: Item) -> list[Item]:
        if settings.delay_s:
            time.sleep(settings.delay_s)
        return check(item)

    async def handle_async(item: Item) -> list[Item]:
        if settings.delay_s:
            await asyncio.sleep(settings.delay_s)
        return check(item)

    return handle_async if settings.mode == "async" else handle


def main() -> None:
    settings = load(PassthroughSettings)
    run_service(settings, Item, make_handlers(settings), routes={Item: settings.output_topic})


if __name__ == "__main__":
    main()
