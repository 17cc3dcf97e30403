"""The extractor's settings, from EXTRACTOR_* variables (and the shared KAFKA_/BLOB_ ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from pipeline import topics
from pipeline.settings import ServiceSettings
from services.extractor.extract import Options


class ExtractorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXTRACTOR_", frozen=True, extra="ignore")

    service_name: str = "extractor"
    input_topic: str = topics.RAW_DOCS
    #: Worker processes, and so documents extracted at once (one per core is right).
    concurrency: int = Field(2, ge=1)

    #: Seconds one document may take before its worker is killed (DLQ reason `timeout`).
    timeout_s: float = Field(120.0, gt=0)
    #: Address space per worker process; past it a document fails as `too_large`.
    memory_limit_mb: int = Field(1024, ge=256)
    #: Documents over this size are not read at all (`too_large`)...
    max_bytes: int = Field(100 * 1024 * 1024, ge=1)
    #: ...nor PDFs with more pages than this.
    max_pages: int = Field(2000, ge=1)
    #: Tried in turn on encrypted PDFs, after the empty password; a JSON list.
    pdf_passwords: list[SecretStr] = []
    drop_references: bool = True

    #: Chunk budget and overlap, in tokens of `tokenizer`.
    chunk_tokens: int = Field(512, ge=16)
    chunk_overlap: int = Field(64, ge=0)
    #: A tokenizer.json or a model directory with one (the base model's, for exact counts);
    #: empty: a fast approximation (words and punctuation marks).
    tokenizer: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> ExtractorSettings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be below chunk_tokens "
                f"({self.chunk_tokens})"
            )
        if self.tokenizer is not None and not (
            self.tokenizer.is_file() or (self.tokenizer / "tokenizer.json").is_file()
        ):
            raise ValueError(
                f"tokenizer {self.tokenizer} is neither a tokenizer.json nor a "
                "directory holding one"
            )
        return self

    @property
    def options(self) -> Options:
        return Options(
            passwords=tuple(p.get_secret_value() for p in self.pdf_passwords),
            drop_references=self.drop_references,
            max_tokens=self.chunk_tokens,
            overlap=self.chunk_overlap,
            max_pages=self.max_pages,
            tokenizer=str(self.tokenizer) if self.tokenizer else None,
        )
