"""Requests per second per API key, one limit for all of the server's processes.

`iot-lake api --workers N` runs N processes on one port, and the kernel hands each connection to any
of them: a limiter per process let a key send up to N times its limit. So a key's state lives in a
small memory-mapped file the processes share (``SharedLimits``; an anonymous map for a single
process), as one number per key: the generic cell rate algorithm (GCRA, a leaky bucket that keeps
only its "theoretical arrival time"). A key may send ``per_second`` requests at once, then one every
``1 / per_second`` seconds; a refused request does not count against the key. Per request: a dict lookup, a lock
(``flock`` across the processes, a thread lock within one) and a few arithmetic steps, microseconds,
where the previous limiter (pyrate-limiter, in process) also ran a thread per key.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import time
import zlib
from contextlib import contextmanager

SLOTS = 16_384  # keys seen since the file was made; beyond, a key shares a slot (a stricter limit)
PROBES = 32
SLOT = struct.Struct("<16sq")  # key id (8 hex characters today), its theoretical arrival time (ns)
NOW = time.monotonic_ns  # CLOCK_MONOTONIC: one clock for every process of the machine; integers, so
# a burst of exactly ``per_second`` is never lost to rounding


class SharedLimits:
    """``allow(key_id)``: whether the key may send a request now (and counts it if so).

    ``path``: a file every process of the server opens (made empty if missing); None keeps the limits
    in this process only."""

    def __init__(self, per_second: int, path: str | None = None):
        if per_second < 1:
            raise ValueError("per_second must be at least 1")
        self.interval = 1_000_000_000 // per_second
        self.burst = self.interval * (per_second - 1)  # how far ahead of now a key may run
        self._thread_lock = threading.Lock()
        self._slots: dict[str, int] = {}  # key id -> its slot, once found (slots never move)
        size = SLOTS * SLOT.size
        if path is None:
            self._fd, self._map = None, mmap.mmap(-1, size)
            return
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)  # zeros: no key seen yet
        self._map = mmap.mmap(self._fd, size)

    def allow(self, key_id: str) -> bool:
        with self._locked():
            at = self._slot(key_id) * SLOT.size
            name, arrival = SLOT.unpack_from(self._map, at)
            now = NOW()
            arrival = max(arrival, now)
            if arrival - now > self.burst:
                return False
            SLOT.pack_into(self._map, at, name, arrival + self.interval)
            return True

    @contextmanager
    def _locked(self):
        with self._thread_lock:  # flock is per open file: threads of one process need their own lock
            if self._fd is None:
                yield
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, key_id: str) -> int:
        """The key's slot, claimed in the shared file on its first request (under the lock)."""
        if key_id in self._slots:
            return self._slots[key_id]
        name = key_id.encode()[:16].ljust(16, b"\0")
        home = zlib.crc32(name) % SLOTS
        slot = home  # when every probe is taken, the key shares its home slot
        for probe in range(PROBES):
            candidate = (home + probe) % SLOTS
            held = self._map[candidate * SLOT.size : candidate * SLOT.size + 16]
            if held == name:
                slot = candidate
                break
            if held == bytes(16):
                SLOT.pack_into(self._map, candidate * SLOT.size, name, 0)
                slot = candidate
                break
        self._slots[key_id] = slot
        return slot
