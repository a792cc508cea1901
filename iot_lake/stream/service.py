"""``iot-lake stream``: the streaming scorer as a process beside ``dagster dev`` (or the daemon in prod).

Each step polls the source, scores what it brought and delivers the case outbox; a step that fails
(the case store or the lake briefly unreachable) is logged and the source reads its whole window
again at the next one: re-observing minutes changes no case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from iot_lake.stream.scorer import StepReport, StreamScorer

log = logging.getLogger(__name__)


def run(
    source,
    scorer: StreamScorer,
    interval_s: float = 1.0,
    once: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Poll ``source`` (``LandingWatcher`` or ``KinesisReader``) every ``interval_s`` seconds into ``scorer``."""
    while True:
        began = time.monotonic()
        try:
            report = scorer.add(source.poll())
        except Exception:  # noqa: BLE001 - a process that must outlive a bad step; the next one retries
            if once:
                raise
            log.exception("stream step failed; reading the window again at the next poll")
            source.reset()
        else:
            if on_step is not None:
                on_step(report)
            if report.cases:
                log.info(f"stream: {report.records} records, {report.minutes} minutes scored, cases {report.cases}")
        if once or should_stop():
            return
        time.sleep(max(0.0, interval_s - (time.monotonic() - began)))
