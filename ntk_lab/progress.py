"""Progress of long work that suits where it is shown: a live bar on a terminal, a few lines in a log.

``progress(iterable, total=, desc=, unit=)`` is ``tqdm.auto.tqdm`` when stderr is a terminal. Elsewhere
(CI, a log file, a notebook's saved output) a bar's carriage-return updates would pile up by the
thousand, so it prints a line at most every ``LOG_SECONDS`` and one when the work ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

LOG_SECONDS = 30.0


class LogProgress:
    """``tqdm``'s interface as used here (iterate, ``update``, ``set_postfix``, ``with``), as lines."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, **_: Any) -> None:
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.n, self.postfix = initial, ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}, {time.monotonic() - self.start:.0f} s{extra}",
              file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= LOG_SECONDS:
            self.last = now
            self._line()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed and not self.disable and self.n:
            self._line()
        self.closed = True

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                self.update()  # counted when handed out: a loop that breaks after its last item still ends at total
                yield item
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _length(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Any:
    """A progress bar on a terminal (``tqdm``), a few lines elsewhere (``LogProgress``)."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    return LogProgress(iterable, **kwargs)
