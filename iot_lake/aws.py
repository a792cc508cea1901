"""The one botocore configuration every AWS client of the control and data planes is created with.

Transient errors (throttling, 5xx, connection resets) are retried inside the client, with
botocore's exponential backoff and jitter, before any caller sees them: ``standard`` mode (or
``adaptive``, which also rate-limits the client) and ``max_attempts`` in all, first call included.

    IOT_LAKE_AWS_RETRY_MODE    standard | adaptive (default standard)
    IOT_LAKE_AWS_MAX_ATTEMPTS  attempts per call, the first included (default 5)

Errors that no retry can fix (AccessDenied, ValidationException, ResourceNotFound ...) come back
on the first attempt; the control plane turns them into failures its retry policy skips
(lib/retries.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from botocore.config import Config

RETRY_MODE_VAR, MAX_ATTEMPTS_VAR = "IOT_LAKE_AWS_RETRY_MODE", "IOT_LAKE_AWS_MAX_ATTEMPTS"
RETRY_MODES = ("standard", "adaptive")
DEFAULT_MAX_ATTEMPTS = 5


def client_config(environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    mode = (env.get(RETRY_MODE_VAR) or "standard").strip().lower()
    if mode not in RETRY_MODES:
        raise ValueError(f"{RETRY_MODE_VAR}={mode!r} is not one of {', '.join(RETRY_MODES)}")
    raw = env.get(MAX_ATTEMPTS_VAR) or str(DEFAULT_MAX_ATTEMPTS)
    try:
        attempts = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_ATTEMPTS_VAR}={raw!r} is not a whole number of attempts") from None
    if attempts < 1:
        raise ValueError(f"{MAX_ATTEMPTS_VAR}={attempts} must be at least 1 (the first call counts)")
    # total_max_attempts counts the first call; botocore's max_attempts would count only the retries.
    return Config(retries={"mode": mode, "total_max_attempts": attempts})


def client(service: str, region_name: str | None = None, session=None, **kwargs):
    """A boto3 client with the shared retry configuration, from ``session`` or boto3's default one."""
    import boto3

    return (session or boto3).client(service, region_name=region_name, config=client_config(), **kwargs)
