"""The automatic retry schedule of one invoice: when it may be tried again on its own,
and when it stops being tried and "requiere atención".

An invoice that did not reach Oppen for a transient reason (no answer, 5xx, the stopped
test instance, a login that failed because Oppen was down) waits OPPEN_RETRY_DELAYS[n]
seconds before its n-th automatic retry (the last delay repeats) until
OPPEN_RETRY_HORIZON seconds have passed since its first failed attempt; then it needs a
person. Rejections, duplicates, conflicts and invalid rows are never retried on their own.

Pure: every time comes in as an argument (the database's clock, read by the caller).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .settings import Settings

# How an unsent invoice continues (binder.Outcome.retry, binder.mark_pending).
TRANSIENT = "transient"   # Oppen did not answer: the next step of the schedule
NOW = "now"               # not attempted for a reason of ours (a stop, a lost day): due now
NEVER = "never"           # a person decides (a rejection, a cancel, refused credentials)


@dataclass(frozen=True)
class Step:
    """An invoice's schedule after one more failure."""
    next_attempt_at: dt.datetime | None   # None: no more automatic tries
    retry_count: int
    first_attempt_at: dt.datetime
    attention_at: dt.datetime | None      # set when the horizon has passed


@dataclass(frozen=True)
class Schedule:
    delays: tuple[float, ...] = Settings.retry_delays
    horizon: float = Settings.retry_horizon

    @classmethod
    def from_settings(cls, settings: Settings) -> "Schedule":
        return cls(delays=tuple(settings.retry_delays), horizon=settings.retry_horizon)

    def delay(self, count: int) -> float:
        """Seconds before the `count`-th automatic retry (1-based; the last one repeats)."""
        return self.delays[min(max(count, 1), len(self.delays)) - 1]

    def expired(self, first: dt.datetime, now: dt.datetime) -> bool:
        return now - first >= dt.timedelta(seconds=self.horizon)

    def step(self, *, retry_count: int, first_attempt_at: dt.datetime | None,
             now: dt.datetime, fresh: bool = False) -> Step:
        """The schedule after a transient failure at `now`. `fresh`: a person asked for
        this run (an audit, a resend), so the schedule starts over."""
        count = 1 if fresh else retry_count + 1
        first = now if fresh or first_attempt_at is None else first_attempt_at
        if self.expired(first, now):
            return Step(None, count, first, now)
        return Step(now + dt.timedelta(seconds=self.delay(count)), count, first, None)
