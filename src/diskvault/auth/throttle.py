"""Login throttling: failures counted per username and per client IP in a sliding window.

An attempt is counted when it starts, not when its password check fails, so
100 guesses sent at once cannot all slip in before the first one has failed;
a success takes its own count back. Counters live in this process (one
``diskvault serve``); a restart forgets them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 50_000  # counters kept before the idle ones are dropped


@dataclass(frozen=True)
class Refusal:
    retry_after: float
    subject: str  # "user admin" or "client 10.0.0.9"
    setting: str  # the setting whose limit was reached
    new: bool  # the first refusal of this lockout (audit it once)


class LoginThrottle:
    def __init__(
        self,
        per_user: int,
        per_ip: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {
            "user": (per_user, "DISKVAULT_LOGIN_MAX_FAILURES_PER_USER"),
            "client": (per_ip, "DISKVAULT_LOGIN_MAX_FAILURES_PER_IP"),
        }
        self.window = window_s
        self.clock = clock
        self._attempts: dict[tuple[str, str], deque[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._attempts.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def begin(self, username: str, client: str) -> Refusal | None:
        """Count an attempt, or refuse it while either counter is at its limit."""
        now = self.clock()
        keys = [("user", username.casefold()), ("client", client)]
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                limit, setting = self.limits[key[0]]
                if len(times) >= limit:
                    until = times[len(times) - limit] + self.window
                    new = self._locked_until.get(key, 0.0) <= now
                    self._locked_until[key] = until
                    return Refusal(until - now, f"{key[0]} {key[1]}", setting, new)
            for key in keys:
                self._attempts[key].append(now)
            if len(self._attempts) > MAX_KEYS:
                self._prune(now)
        return None

    def succeeded(self, username: str, client: str) -> None:
        """A right password clears the user's failures and takes back this attempt."""
        with self._lock:
            self._attempts.pop(("user", username.casefold()), None)
            times = self._attempts.get(("client", client))
            if times:
                times.pop()

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self._attempts.items() if not t or t[-1] <= now - self.window]:
            del self._attempts[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]
        # Still too many (a flood of fresh names from many addresses): drop the oldest.
        for key in list(self._attempts)[: max(0, len(self._attempts) - MAX_KEYS)]:
            del self._attempts[key]
