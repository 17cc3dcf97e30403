"""The small exception tree every service raises from: permanent (DLQ) or retryable (backoff)."""


class PipelineError(Exception):
    """Base of every error the worker loop knows how to route."""

    #: Short machine-readable reason recorded in DLQ records and metric labels.
    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class BadInput(PipelineError):
    """The message can never be handled as it is: it goes to the DLQ with its reason."""

    reason = "bad_input"


class Retryable(PipelineError):
    """A transient failure (timeout, 429, broker hiccup): retried with backoff, then DLQ."""

    reason = "retries_exhausted"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        #: Seconds the remote side asked us to wait (Retry-After), if it said.
        self.retry_after = retry_after
