"""The one channel of a benchmark's progress: :class:`Progress`.

Every runner reports through it (``ctx.say(line)``; :class:`~featx.bench.table.Table` counts
each attempted row). On a terminal (stderr) the lines are written above a tqdm bar over the
table's rows; elsewhere it prints nothing, unless asked for lines (``featx -v bench``: a log).
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from tqdm import tqdm

from ..progress import enabled, progress_bar


class Progress:
    """Progress lines (seconds since the start) and a bar over the rows, on stderr.

    Parameters
    ----------
    stream : file, optional
        Default: ``sys.stderr``.
    quiet : bool
        Nothing at all.
    lines : bool or None
        Print the lines: None, only when ``stream`` is a terminal; True, wherever it goes.
    write : callable, optional
        Send each line (without its time) to ``write`` instead, and show no bar (tests, callers
        that collect the lines).

    Examples
    --------
    >>> got = []
    >>> say = Progress(write=got.append)
    >>> say.expect(2); say("a row"); say.row_done(); say.close()
    >>> got, say.bars
    (['a row'], False)
    """

    def __init__(self, stream=None, quiet: bool = False, *, lines: bool | None = None,
                 write: Callable[[str], None] | None = None):
        self.stream = sys.stderr if stream is None else stream
        self.write = write
        self.show = not quiet and (write is not None or enabled(lines, self.stream))
        #: Whether bars show (the rows' bar here; runners pass it on to long steps).
        self.bars = not quiet and write is None and enabled(None, self.stream)
        self.t0 = time.perf_counter()
        self._bar = None

    def __call__(self, message: str) -> None:
        if not self.show:
            return
        if self.write is not None:
            self.write(message)
            return
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {message}"
        if self._bar is not None:
            tqdm.write(line, file=self.stream)  # above the bar, which is drawn again below
        else:
            print(line, file=self.stream, flush=True)

    def expect(self, rows: int) -> None:
        """``rows`` more rows are planned (starts the bar on the first call)."""
        if not self.bars:
            return
        if self._bar is None:
            self._bar = progress_bar(rows, "featx bench", unit="row", progress=True, file=self.stream)
        else:
            self._bar.total += rows
            self._bar.refresh()

    def row_done(self) -> None:
        """One row attempted (done or failed)."""
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        """End the bar (the next :meth:`expect` starts a new one)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
