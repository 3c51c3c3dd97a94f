"""Every error prefect-comet raises, one class per failure.

```
CometAPIError                     task_id, status_code, code, request_id
├── MissingAPIKeyError            no block and no COMETAPI_KEY
├── AuthenticationError           HTTP 401/403, Kling 1000-1004, 1103
├── AccountError                  Kling 1100-1102: balance or billing; a person must act
├── BadRequestError               HTTP 400, Kling 1200-1203: fix the input
│   ├── IdempotencyKeyReusedError one key, two different requests
│   └── ContentPolicyError        Kling 1300/1301
├── RateLimitError                HTTP 429, Kling 1302/1303, after retries
├── ServerError                   HTTP 5xx or no connection, after retries
├── NotFoundError                 HTTP 404: no such task
├── CreateOutcomeUnknownError     the create may have reached the server: the job may exist
├── GenerationFailedError         the server ended the job as failed
├── WaitTimeoutError              not done by the deadline (last_status); resume by task id
├── UnknownStatusError            a status no document names, for too long
├── InvalidContentError           the downloaded bytes are not the promised video
├── OutputMismatchError           the stored video is not what was asked (strict_output)
├── ResponseFormatError           an answer that is not the documented JSON shape
├── StorageError                  the destination or a ledger cannot be written (disk full, no access)
├── LedgerDamagedError            a ledger record cannot be read (path, key); the sidecar still holds the id
├── BatchFailedError              some jobs of a batch failed (failed_count, manifest_uri)
├── CannotSuspendError            wait="suspend" outside a top-level deployment run
└── BudgetExceededError           the estimate or the spend would pass max_spend_usd or the balance

StillRendering                    not an error: with wait="suspend", a job is not done yet
```

Every message says which task it concerns (when one is known) and what to do, and never
contains the API key or a signed URL. What code may act on is also an attribute.

Example:
    ```python
    from prefect_comet.exceptions import RateLimitError, WaitTimeoutError

    try:
        job = await wait_for_video(job)
    except WaitTimeoutError as error:
        print("resume later with task id", error.task_id)
    except RateLimitError as error:
        print(error.status_code, error.code, error.request_id)
    ```
"""

from __future__ import annotations


class CometAPIError(Exception):
    """Base class of every prefect-comet error.

    Args:
        message: What happened and what to do.
        task_id: The server's task id, when one is known (also appended to the message).
        status_code: The HTTP status of the answer that caused it, if any.
        code: Kling's numeric error code, if the answer carried one.
        request_id: The server's request id, if the answer carried one (for support).
    """

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        status_code: int | None = None,
        code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        if task_id and task_id not in message:
            message = f"{message} (task id: {task_id})"
        super().__init__(message)

    def __reduce__(self):  # keep the attributes when Prefect pickles the exception
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[CometAPIError], message: str, state: dict) -> CometAPIError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


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
    """The API failed on its side (HTTP 5xx) or could not be reached, and retries ran out."""


class NotFoundError(CometAPIError):
    """The API does not know this task (HTTP 404)."""


class CreateOutcomeUnknownError(CometAPIError):
    """A create request may have reached the server but no answer came: the job may exist."""


class GenerationFailedError(CometAPIError):
    """The server ended the generation as failed; the message is the server's reason."""


class WaitTimeoutError(CometAPIError):
    """The job did not finish before the deadline; it may still finish, resume by task id.

    Args:
        message: What happened and what to do.
        task_id: The job's task id.
        last_status: The last status the server answered.
    """

    def __init__(self, message: str, *, task_id: str | None = None, last_status: str | None = None) -> None:
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


class StorageError(CometAPIError):
    """The destination or a ledger cannot be written: the disk is full, or access is refused.

    When a job was already created, `task_id` names it, so nothing paid is lost.
    """


class LedgerDamagedError(CometAPIError):
    """A ledger record cannot be read (empty, truncated, not a record).

    Args:
        message: What is wrong and how to recover.
        path: The damaged record's path.
        key: The idempotency key it belongs to.
        task_id: The task id, when it could still be found (e.g. in a sidecar).
    """

    def __init__(self, message: str, *, path: str, key: str, task_id: str | None = None) -> None:
        super().__init__(message, task_id=task_id)
        self.path = path
        self.key = key


class BatchFailedError(CometAPIError):
    """Some jobs of a batch failed and partial results were not allowed.

    Args:
        message: How many failed and what to do.
        failed_count: How many jobs failed.
        manifest_uri: The manifest that lists every outcome.
    """

    def __init__(self, message: str, *, failed_count: int = 0, manifest_uri: str | None = None) -> None:
        super().__init__(message)
        self.failed_count = failed_count
        self.manifest_uri = manifest_uri


class CannotSuspendError(CometAPIError):
    """`wait="suspend"` asked of a run that cannot suspend: a local run, a subflow, a task."""


class BudgetExceededError(CometAPIError):
    """A run's estimate, or its next job, would pass `max_spend_usd` or the account's balance."""


# A signal, not an error (like Prefect's own `Pause`): no `except Exception` on its way up
# may take it for a failed job.
class StillRendering(BaseException):  # noqa: N818
    """With `wait="suspend"`: a job is still rendering, so the run suspends instead of polling.

    Args:
        job: The job as last seen (a `VideoJob`).
    """

    def __init__(self, job: object) -> None:
        super().__init__(f"Task {getattr(job, 'task_id', '?')} is still rendering.")
        self.job = job
