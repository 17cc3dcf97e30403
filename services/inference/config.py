"""The inference service's settings, from INFERENCE_* variables (and the shared KAFKA_/BLOB_
ones)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from pipeline import topics
from pipeline.settings import ServiceSettings
from services.inference.core import Limits


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INFERENCE_", frozen=True, extra="ignore")

    service_name: str = "inference"
    input_topic: str = topics.EVAL_RESULTS
    #: Every replica reads every verdict (each loads every promoted adapter), so each has a
    #: group of its own, read from the start: the last promotion wins, after a restart too.
    group_id: str | None = Field(default_factory=lambda: f"inference-{uuid.uuid4().hex[:12]}")

    #: transformers + peft (CPU, or one GPU), or vLLM (its own image: vllm, or vllm-cpu).
    engine: Literal["transformers", "vllm"] = "transformers"
    #: vLLM: adapters in one batch, their largest rank, the context length (unset: the
    #: model's), and any other AsyncEngineArgs as a JSON object.
    vllm_max_loras: int = Field(4, ge=1)
    vllm_max_lora_rank: int = Field(64, ge=1)
    vllm_max_model_len: int | None = Field(None, ge=16)
    vllm_options: dict[str, Any] = {}
    #: The model served as "base", on which every adapter loads (a hub id or a directory).
    base_model: str = Field(
        validation_alias=AliasChoices("INFERENCE_BASE_MODEL", "DISTILLERY_BASE_MODEL")
    )
    #: "auto": CUDA when there is a GPU, else the CPU.
    device: str = "auto"

    #: Where the server listens; port 0 picks a free one (logged).
    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    port: int = Field(50051, ge=0, le=65535)
    #: The OpenAI-compatible HTTP endpoint (/v1/chat/completions, /v1/models) on this port,
    #: beside gRPC; unset: none.
    openai_port: int | None = Field(None, ge=0, le=65535)
    #: Bearer token every call needs (health checks excepted); or a file holding it (a
    #: mounted Kubernetes secret). Neither: no auth, which only a loopback host may have
    #: unless allowed below.
    auth_token: SecretStr | None = None
    auth_token_file: Path | None = None
    allow_unauthenticated: bool = False
    #: TLS: both files, PEM. Neither: plaintext.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    max_prompt_tokens: int = Field(2048, ge=1)
    #: The most tokens a request may ask for, and what it gets when it asks for none.
    max_tokens: int = Field(1024, ge=1)
    default_max_tokens: int = Field(256, ge=1)
    #: Requests in flight at once; more are refused with RESOURCE_EXHAUSTED.
    max_concurrency: int = Field(64, ge=1)
    #: A stream's text is sent at most this often (the first piece at once): per token, a
    #: small model's messages cost more than its tokens (BENCHMARKS.md). 0: every token.
    stream_interval_ms: float = Field(20.0, ge=0)
    #: Stream messages the server sends per second, all streams together: with many streams
    #: each one's pieces come less often. A message costs about 0.1 ms of the interpreter
    #: the transformers engine shares, so 500/s keeps that near 5 % (BENCHMARKS.md). 0: no cap.
    stream_messages_per_s: float = Field(500.0, ge=0)
    #: Rows in one batch of the transformers engine, and how long it waits for the callers
    #: of its last batch to come back before starting a smaller one (0: never waits).
    max_batch_size: int = Field(16, ge=1)
    batch_wait_ms: float = Field(20.0, ge=0)
    #: Promoted adapters kept loaded; the oldest beyond this is unloaded.
    max_adapters: int = Field(8, ge=1)

    #: Adapters fetched from the blob store. Default: $DISTILLERY_HOME/inference.
    work_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("DISTILLERY_HOME", ".distillery")) / "inference"
    )

    @model_validator(mode="after")
    def _checked(self) -> InferenceSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs INFERENCE_TLS_CERT_FILE and INFERENCE_TLS_KEY_FILE")
        if self.auth_token is not None and self.auth_token_file is not None:
            raise ValueError("give INFERENCE_AUTH_TOKEN or INFERENCE_AUTH_TOKEN_FILE, not both")
        if self.auth_token is not None and not self.auth_token.get_secret_value().strip():
            raise ValueError("INFERENCE_AUTH_TOKEN is empty")
        if self.auth_token_file is not None:
            try:
                if not self.auth_token_file.read_text(encoding="utf-8").strip():
                    raise ValueError(f"INFERENCE_AUTH_TOKEN_FILE {self.auth_token_file} is empty")
            except OSError as exc:
                raise ValueError(f"INFERENCE_AUTH_TOKEN_FILE: {exc}") from None
        loopback = self.host in ("127.0.0.1", "localhost", "::1")
        unauthenticated = self.auth_token is None and self.auth_token_file is None
        if unauthenticated and not loopback and not self.allow_unauthenticated:
            raise ValueError(f"INFERENCE_HOST {self.host} without INFERENCE_AUTH_TOKEN(_FILE): "
                             "anyone could call it; set a token, or "
                             "INFERENCE_ALLOW_UNAUTHENTICATED=true")  # fmt: skip
        if self.default_max_tokens > self.max_tokens:
            raise ValueError("INFERENCE_DEFAULT_MAX_TOKENS is over INFERENCE_MAX_TOKENS")
        return self

    @property
    def limits(self) -> Limits:
        return Limits(self.max_prompt_tokens, self.max_tokens, self.default_max_tokens)

    def token(self) -> str | None:
        if self.auth_token_file is not None:
            return self.auth_token_file.read_text(encoding="utf-8").strip()
        return self.auth_token.get_secret_value() if self.auth_token else None
