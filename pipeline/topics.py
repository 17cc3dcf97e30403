"""Topic names, their partition counts, and the DLQ naming rule."""

SOURCES = "sources"
RAW_DOCS = "raw-docs"
PARSED_TEXT = "parsed-text"
PAIRS = "pairs"
CHECKPOINTS = "checkpoints"
EVAL_RESULTS = "eval-results"

DLQ_SUFFIX = ".dlq"


def dlq(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


# Partitions bound the number of consumers that can share a topic's work. parsed-text feeds
# the synthesizer, the one stage that scales out (LLM calls), so it gets the most.
PARTITIONS: dict[str, int] = {
    SOURCES: 1,
    RAW_DOCS: 6,
    PARSED_TEXT: 12,
    PAIRS: 6,
    CHECKPOINTS: 1,
    EVAL_RESULTS: 1,
}

PIPELINE: tuple[str, ...] = tuple(PARTITIONS)


def all_topics() -> dict[str, int]:
    """Every topic of the pipeline with its DLQ, mapped to its partition count."""
    out = dict(PARTITIONS)
    out.update({dlq(t): 1 for t in PARTITIONS})
    return out
