"""Progress of long jobs: tqdm bars on stderr when it is a terminal, nothing otherwise.

One place decides whether a bar shows and how it looks, for every long job of featx:
``Backbone.embed``, ``extract``, ``featx predict``, the grid searches of ``featx train`` and
the rows of ``featx bench``::

    progress=None   a bar when stderr is a terminal (the default everywhere), else nothing
    progress=True   a bar, wherever stderr goes
    progress=False  nothing (``featx -q``)

Bars write to stderr only, so stdout keeps the result (a table, a CSV, a JSON document).
The summary line at the end of a job is the caller's (``ExtractReport.summary``...);
:func:`featx.heads.search.grid_search` puts a bar on a grid search.

Examples
--------
>>> import io
>>> screen = io.StringIO()
>>> with progress_bar(3, "featx demo", progress=True, file=screen) as bar:
...     bar.update(3)
>>> "featx demo: 100%" in screen.getvalue() and "3/3" in screen.getvalue()
True
>>> progress_bar(3, "featx demo", file=io.StringIO()).disable   # not a terminal
True
"""

from __future__ import annotations

import sys

__all__ = ["enabled", "progress_bar"]


def enabled(progress: bool | None, stream=None) -> bool:
    """``progress`` when given, else whether ``stream`` (default: stderr) is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(total: int | None, desc: str, *, unit: str = "item", progress: bool | None = None,
                 delay: float = 0.0, leave: bool = True, file=None):
    """A tqdm bar on stderr, or a bar that draws nothing unless :func:`enabled` says so (tqdm is then
    not even imported: a quiet command pays nothing for bars).

    Parameters
    ----------
    total : int or None
        Units of work (None: unknown).
    desc : str
        What runs (``"featx efficientnet-lite0"``).
    unit : str
    progress : bool or None
        See the module docstring.
    delay : float
        Show the bar only once the job has run this many seconds (short calls print nothing).
    leave : bool
        Keep the finished bar on screen.
    file : stream, optional
        Default: ``sys.stderr`` at the time of the call.
    """
    file = sys.stderr if file is None else file
    if not enabled(progress, file):
        return NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, smoothing=0.1, dynamic_ncols=True, delay=delay, leave=leave,
                file=file)


class NoBar:
    """What :func:`progress_bar` gives when no bar is shown: tqdm's ``update``/``close``/context, drawing nothing."""

    disable = True

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NoBar":
        return self

    def __exit__(self, *exc) -> None:
        pass
