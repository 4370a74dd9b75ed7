"""Bytes counted per client within fixed windows, on this replica (`QuotaWindows`); the
Redis store counts the same way in Redis, for every replica at once.

A client's window starts with the first bytes counted for it and lasts `window_seconds`; then
its count starts again from nothing. A charge is taken whole or not at all: refused when the
client has reached its limit, or when the charge would take it past the limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import attrs


@attrs.frozen
class QuotaCharge:
    """The outcome of a charge: whether it was taken, the bytes counted in the client's window
    (the charge included when taken), and the seconds until that window ends."""

    allowed: bool
    used: int
    reset_seconds: float


def refused(used: int, limit: int, nbytes: int) -> bool:
    return used >= limit or used + nbytes > limit


@attrs.define
class QuotaWindows:
    clock: Callable[[], float] = time.monotonic
    # client -> (window end, bytes counted). Every window lasts as long, so insertion order is
    # end order: the ended ones are at the front.
    _windows: OrderedDict[str, tuple[float, int]] = attrs.field(factory=OrderedDict)

    def charge(self, client: str, nbytes: int, limit: int, window_seconds: float) -> QuotaCharge:
        """Count `nbytes` for `client` unless that is refused (0 bytes: only ask whether the
        client is still below `limit`)."""
        now = self.clock()
        while self._windows and next(iter(self._windows.values()))[0] <= now:
            self._windows.popitem(last=False)
        end, used = self._windows.get(client, (now + window_seconds, 0))
        if refused(used, limit, nbytes):
            return QuotaCharge(False, used, end - now)
        if nbytes:
            self._windows[client] = (end, used + nbytes)
        return QuotaCharge(True, used + nbytes, end - now)
