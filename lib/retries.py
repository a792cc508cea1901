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
Steps that compute in the Dagster process (the landing assets, deviations) run under
``permanent_errors``: an error of the code or its input (ValueError, KeyError, ...) fails at once,
and any other error that repeats the previous attempt's exactly (the same input failing the same
way) is not tried again either.

    IOT_LAKE_RETRY_MAX_RETRIES     step retries after the first attempt (default 3)
    IOT_LAKE_RETRY_DELAY_SECONDS   delay before the first retry, doubled each time (default 30)
"""

from __future__ import annotations

import os
import re
import traceback
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


# Errors of the code and its input: the same input fails the same way on every attempt. Not listed,
# so retried: OSError (I/O, connections, timeouts), cloud SDK and database driver errors.
DETERMINISTIC = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError, RecursionError, AssertionError)


@contextmanager
def permanent_errors(context, what: str) -> Iterator[None]:
    """Around a step's own computation: deterministic errors, and errors that repeat the step's
    previous attempt exactly, fail the step without another attempt (a poison input must not be
    retried for ten minutes before it fails); other errors keep the retry policy."""
    try:
        yield
    except Failure:
        raise
    except Exception as exc:
        if isinstance(exc, DETERMINISTIC):
            raise permanent(f"{what}: {type(exc).__name__}: {exc}") from exc
        if context.retry_number > 0 and _signature(exc) in _previous_failure(context):
            raise permanent(f"{what} failed twice the same way: {type(exc).__name__}: {exc}") from exc
        raise


def _signature(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _previous_failure(context) -> list[tuple[str, str]]:
    """The errors (class name, message) of this step's latest failed attempt in this run: the one
    Dagster records and the causes it wraps (the user code's error is one of them)."""
    from dagster import DagsterEventType

    # An asset's context reaches its op's handle through op_execution_context (op_handle on it is deprecated).
    step = str(getattr(context, "op_execution_context", context).op_handle)
    # A failed attempt the policy retries is recorded as STEP_UP_FOR_RETRY, with its error.
    failures = [
        e.dagster_event
        for e in context.instance.all_logs(
            context.run.run_id, of_type={DagsterEventType.STEP_UP_FOR_RETRY, DagsterEventType.STEP_FAILURE}
        )
        if e.dagster_event is not None and e.dagster_event.step_key == step
    ]
    error = failures[-1].event_specific_data.error if failures else None
    chain = []
    while error is not None:
        chain.append((error.cls_name, error.message.strip()))
        error = error.cause
    return chain


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
