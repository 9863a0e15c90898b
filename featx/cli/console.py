"""Where the ``featx`` command's text goes: its contract with scripts, in one place.

- stdout: the result. Human text (a table, a report, a summary line), or with ``--json`` one
  JSON document and nothing else; ``featx predict`` without ``--out`` writes its CSV there.
- stderr: progress bars (only when stderr is a terminal), notes, warnings (each once), errors,
  and with ``--json`` the human text.
- ``-q/--quiet``: no progress and no human text; what a script asked for (``--json``, the CSV)
  is still written, and so are warnings and errors.
- ``-v/--verbose``: featx's log down to DEBUG, and the traceback of an OS error.

Commands write through a :class:`Console` (``args.console``), never with ``print``.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from contextlib import contextmanager

from ..files import json_default

#: Exit codes (documented in ``featx --help`` and the README).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CONTRACT = """\
output:
  stdout    the result: human text, or with --json one JSON document and nothing else
            (--json: extract, train, evaluate, predict, deploy, verify, info, doctor);
            predict without --out: the CSV (its summary line goes to stderr)
  stderr    progress bars (only when stderr is a terminal), notes, warnings (each once),
            errors; with --json, the human text too
  -q        no progress, no human text (JSON, CSV, warnings and errors are still written)
  -v        log more (featx's debug log), tracebacks of OS errors
  -q and -v go before or after the subcommand.

exit codes:
  0    success
  1    a featx error (a message, no traceback); verify: a damaged cache; doctor: a problem
  2    usage: the command line is wrong (an unknown flag, a bad value, flags that do not go together)
  130  interrupted (Ctrl-C): committed work is kept, run the same command again to resume
"""


class Console:
    """The CLI's output channels (see the module docstring).

    Parameters
    ----------
    quiet, verbose, json : bool
        ``-q``, ``-v`` and ``--json`` as given.
    """

    def __init__(self, quiet: bool = False, verbose: bool = False, json: bool = False):
        self.quiet = quiet
        self.verbose = verbose
        self.json = json
        self._warned: set[str] = set()

    @property
    def progress(self) -> bool | None:
        """What long jobs get as ``progress=``: False under -q, else None (a bar on a terminal)."""
        return False if self.quiet else None

    def result(self, text: str = "") -> None:
        """Human result text: stdout, or stderr under --json; nothing under -q."""
        if not self.quiet:
            print(text, file=sys.stderr if self.json else sys.stdout, flush=True)

    def note(self, text: str) -> None:
        """A side remark (a file written, a hint): stderr; nothing under -q."""
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        """``featx: warning: TEXT`` on stderr, once per text (whether warned, logged or noted)."""
        if text not in self._warned:
            self._warned.add(text)
            print(f"featx: warning: {text}", file=sys.stderr, flush=True)

    @staticmethod
    def problem(text: str) -> None:
        """What a failed check found (``DAMAGED: ...``): stderr, always."""
        print(text, file=sys.stderr, flush=True)

    @staticmethod
    def error(text: str) -> None:
        """``featx: error: TEXT`` on stderr, always."""
        print(f"featx: error: {text}", file=sys.stderr, flush=True)

    def document(self, doc) -> None:
        """The one JSON document of a --json run, on stdout."""
        sys.stdout.write(json.dumps(doc, indent=2, default=json_default) + "\n")
        sys.stdout.flush()

    def data(self, text: str) -> None:
        """Data a script asked for (a CSV): stdout, even under -q."""
        sys.stdout.write(text)
        sys.stdout.flush()

    @contextmanager
    def capturing(self):
        """Route Python warnings and featx's log through :meth:`warn` while a command runs."""
        handler = _ConsoleHandler(self)
        logger = logging.getLogger("featx")
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if self.verbose else logging.WARNING)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = self._show_warning
                yield self
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)

    def _show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.warn(str(message))


class _ConsoleHandler(logging.Handler):
    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.console.warn(text)
        else:
            print(f"featx: {text}", file=sys.stderr, flush=True)
