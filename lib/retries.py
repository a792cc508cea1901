"""What the control plane retries and what fails a run at once.

Two layers, so each error is retried where it is cheapest:

1. Inside every AWS call: botocore's standard retries (iot_lake/aws.py) absorb throttling, 5xx and
   dropped connections with exponential backoff.
2. Around a whole step: RETRY_POLICY, on every job (jobs/) and on the assets sensors launch outside
   a job, retries a step whose error is still transient after that (botocore gave up, a job run
   lost its capacity or was killed), after a delay growing exponentially with jitter.

An error no retry can fix (AccessDenied, ValidationException, ResourceNotFound, a job run that
failed in its own code) becomes ``dagster.Failure(allow_retries=False)`` carrying the service's
message, so the policy lets the run fail on its first attempt and the message is the failure.

    IOT_LAKE_RETRY_MAX_RETRIES     step retries after the first attempt (default 3)
    IOT_LAKE_RETRY_DELAY_SECONDS   delay before the first retry, doubled each time (default 30)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from dagster import Backoff, Failure, Jitter, RetryPolicy

MAX_RETRIES_VAR, DELAY_VAR = "IOT_LAKE_RETRY_MAX_RETRIES", "IOT_LAKE_RETRY_DELAY_SECONDS"

# Error codes that mean the request itself is wrong or not allowed: the same call fails again.
PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "ValidationException",
        "ValidationError",
        "InvalidParameterValue",
        "InvalidParameterException",
        "InvalidRequestException",
        "InvalidInputException",
        "EntityNotFoundException",
        "ResourceNotFoundException",
        "ResourceNotFound",
        "NoSuchBucket",
        "NoSuchKey",
        "NotFoundException",
    }
)
# Words of a service's failure text that mean the run could succeed when started again.
TRANSIENT_FAILURE = re.compile(
    r"throttl|rate exceeded|too many requests|insufficient capacity|capacity (?:error|exceeded|unavailable)"
    r"|service ?unavailable|internal ?(?:server ?)?(?:error|failure)|slow ?down|try again|spot instance"
    r"|connection (?:reset|refused)|timed out",
    re.IGNORECASE,
)


def retry_policy(environ: Mapping[str, str] | None = None) -> RetryPolicy:
    env = os.environ if environ is None else environ
    return RetryPolicy(
        max_retries=int(env.get(MAX_RETRIES_VAR) or 3),
        delay=float(env.get(DELAY_VAR) or 30),
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )


RETRY_POLICY = retry_policy()


def is_permanent_client_error(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in PERMANENT_CODES


def is_transient_failure(message: str) -> bool:
    return bool(TRANSIENT_FAILURE.search(message))


def permanent(description: str) -> Failure:
    return Failure(description=description, allow_retries=False)


@contextmanager
def fail_fast(what: str) -> Iterator[None]:
    """Around calls to AWS: a permanent error fails the step at once, with the service's message."""
    try:
        yield
    except Failure:
        raise
    except Exception as exc:
        if is_permanent_client_error(exc):
            raise permanent(f"{what}: {exc}") from exc
        raise


class JobFailed(Failure):
    """A job run (EMR, Glue, SageMaker) that ended other than in success, with the service's account.

    Retried by the policy only when that account reads as transient (throttled, out of capacity, a
    service error); a run that failed in its own code would fail the same way again.
    """

    def __init__(self, message: str):
        super().__init__(description=message, allow_retries=is_transient_failure(message))


# What PipesSubprocessClient raises when the script exits with an error code (its exception class,
# DagsterPipesExecutionError, is not exported by dagster; its message is the contract used here).
_EXIT_CODE = re.compile(r"External execution process failed with code (-?\d+)")


@contextmanager
def local_process_failures(what: str) -> Iterator[None]:
    """Around a local Pipes subprocess: an exit with an error code fails fast, a kill is retried."""
    try:
        yield
    except Failure:
        raise
    except Exception as exc:
        match = _EXIT_CODE.fullmatch(str(exc))
        if match and int(match.group(1)) > 0:  # the script raised: the same input fails again
            raise permanent(f"{what} exited with code {match.group(1)}; its traceback is in the step's stderr") from exc
        raise  # killed by a signal (OOM killer, a restart): worth another attempt
