"""Progress of long passes (decoding, feature extraction), through logging.

The library never prints: a pass reports images done, rate and time left to its logger
at INFO, at most every ``interval`` seconds, and once when it ends. The CLI shows
``hubtransfer`` INFO records by default; a library user sees them after
``logging.basicConfig(level=logging.INFO)``.

This module does not import TensorFlow.
"""

from __future__ import annotations

import logging
import time

__all__ = ["Progress"]

#: Seconds between two progress records of one pass.
DEFAULT_INTERVAL_S = 10.0


class Progress:
    """Counts the images of one pass and logs how far it is.

    Args:
        logger: Where the records go (at INFO).
        what: What the pass does, e.g. ``"Decoding 400 images of photos/"``.
        total: Images in the pass, when known (then a percentage and time left show).
        interval: Seconds between records while the pass runs.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        total: int | None,
        *,
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.logger = logger
        self.what = what
        self.total = total
        self.interval = interval
        self.done = 0
        self.start = time.perf_counter()
        self._last = self.start

    def update(self, done: int) -> None:
        """Sets how many images are done; logs when ``interval`` has passed."""
        self.done = done
        now = time.perf_counter()
        if now - self._last >= self.interval and self.logger.isEnabledFor(logging.INFO):
            self._last = now
            self.logger.info("%s: %s", self.what, self.status(now))

    def advance(self, n: int) -> None:
        """Adds ``n`` images done."""
        self.update(self.done + n)

    def status(self, now: float | None = None) -> str:
        """``"120/400 images (30%), 35.2 images/s, 8 s left"``."""
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            return (
                f"{self.done}/{self.total} images ({100 * self.done / self.total:.0f}%), "
                f"{rate:.1f} images/s, {left:.0f} s left"
            )
        return f"{self.done} images, {rate:.1f} images/s"

    def finish(self) -> float:
        """Logs the whole pass's count, time and rate; returns its seconds."""
        seconds = time.perf_counter() - self.start
        self.logger.info(
            "%s: %d images in %.1f s (%.1f images/s)",
            self.what,
            self.done,
            seconds,
            self.done / seconds if seconds > 0 else 0.0,
        )
        return seconds
