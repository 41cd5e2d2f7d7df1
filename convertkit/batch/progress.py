"""How a running batch looks on stderr: a live bar with counts by status on a terminal,
one plain line per finished job elsewhere (CI logs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from convertkit.batch.driver import BatchProgress

_BAR_WIDTH = 24


class ProgressDisplay:
    """Feed it the batch's progress events; call ``close`` at the end."""

    def __init__(self, write: Callable[[str], None], is_tty: bool) -> None:
        self.write = write
        self.is_tty = is_tty
        self.start = time.monotonic()
        self.last: BatchProgress | None = None
        self.lock = threading.Lock()
        self.finished = 0
        self.stop = threading.Event()
        if is_tty:  # keep the clock moving while long jobs run
            threading.Thread(target=self._tick, daemon=True).start()

    def __call__(self, event: BatchProgress) -> None:
        with self.lock:
            self.last = event
            if event.event != "started":
                self.finished += 1
            line = self._job_line(event) if event.event != "started" else None
            if self.is_tty:
                if line:
                    self.write("\r\033[K" + line + "\n")
                self.write("\r\033[K" + self._bar(event))
            elif line:
                self.write(line + "\n")

    def close(self) -> None:
        self.stop.set()
        if self.is_tty and self.last is not None:
            with self.lock:
                self.write("\r\033[K" + self._bar(self.last) + "\n")

    def _job_line(self, event: BatchProgress) -> str:
        outcome = event.outcome
        assert outcome is not None
        width = len(str(event.total))
        where = "cached" if event.event == "cached" else f"{outcome.duration_s:.1f} s"
        text = f"[{self.finished:>{width}}/{event.total}] {outcome.status.value:<5}  " \
               f"{outcome.name} ({where})"
        if outcome.failure is not None:
            text += f"  {outcome.failure.value}: {outcome.message[:100]}"
        return text

    def _bar(self, event: BatchProgress) -> str:
        done = self.finished
        filled = round(_BAR_WIDTH * done / max(event.total, 1))
        counts = event.counts
        elapsed = int(time.monotonic() - self.start)
        return (f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{event.total}  "
                f"pass {counts['pass']}  fail {counts['fail']}  error {counts['error']}  "
                f"running {counts['running']}  cached {counts['cached']}  "
                f"{elapsed // 60:02d}:{elapsed % 60:02d}")

    def _tick(self) -> None:
        while not self.stop.wait(1.0):
            with self.lock:
                if self.last is not None:
                    self.write("\r\033[K" + self._bar(self.last))
