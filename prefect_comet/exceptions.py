"""Exceptions raised by prefect-comet, one class per failure.

Every message says which task it concerns (when one is known) and what the user can do,
and never contains the API key or a signed URL.

Example:
    ```python
    from prefect_comet.exceptions import CometAPIError, WaitTimeoutError

    try:
        job = await wait_for_video(job)
    except WaitTimeoutError as exc:
        print("resume later with task id", exc.task_id)
    ```
"""

from __future__ import annotations


class CometAPIError(Exception):
    """Base class of every prefect-comet error."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        self.task_id = task_id
        if task_id and task_id not in message:
            message = f"{message} (task id: {task_id})"
        super().__init__(message)

    def __reduce__(self):  # keep task_id when Prefect pickles the exception
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[CometAPIError], message: str, state: dict) -> CometAPIError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


class MissingAPIKeyError(CometAPIError):
    """No API key was given: neither a credentials block nor `COMETAPI_KEY`."""


class AuthenticationError(CometAPIError):
    """The API rejected the key (HTTP 401/403, Kling codes 1000-1004 and 1103)."""


class AccountError(CometAPIError):
    """The account cannot run the job (Kling 1100-1102: balance or billing); a person must act."""


class BadRequestError(CometAPIError):
    """The API refused the request's content (HTTP 400, Kling 1200-1203); fix the input."""


class IdempotencyKeyReusedError(BadRequestError):
    """An idempotency key was used again for a different request."""


class ContentPolicyError(BadRequestError):
    """The request or the result was refused by content policy (Kling 1300/1301)."""


class RateLimitError(CometAPIError):
    """The rate or parallel-task limit was hit and retries ran out (HTTP 429, Kling 1302/1303)."""


class ServerError(CometAPIError):
    """The API failed on its side (HTTP 5xx) and retries ran out."""


class NotFoundError(CometAPIError):
    """The API does not know this task (HTTP 404)."""


class CreateOutcomeUnknownError(CometAPIError):
    """A create request may have reached the server but no answer came: the job may exist."""


class GenerationFailedError(CometAPIError):
    """The server ended the generation as failed; the message is the server's reason."""


class WaitTimeoutError(CometAPIError):
    """The job did not finish before the deadline; it may still finish, resume by task id."""

    def __init__(
        self, message: str, *, task_id: str | None = None, last_status: str | None = None
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.last_status = last_status


class UnknownStatusError(CometAPIError):
    """The server kept answering a status this package does not know."""


class InvalidContentError(CometAPIError):
    """The downloaded bytes are not the video promised (not MP4, wrong size, JSON body)."""


class OutputMismatchError(CometAPIError):
    """The stored video is not what was asked for (frame, duration) and strict output was on."""


class ResponseFormatError(CometAPIError):
    """The server answered something that is not the documented JSON shape."""
