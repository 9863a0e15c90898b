"""What every runner reads (:class:`Context`) and where it writes (:class:`Table`).

A runner (:mod:`~featx.bench.baselines`, :mod:`~featx.bench.frozen`,
:mod:`~featx.bench.finetuned`) takes the context, one training subset and the table, and
adds its rows through :meth:`Table.attempt`: a row that raises is recorded as a
:class:`~featx.bench.rows.Failure` and never ends the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import FeatxError
from .config import BenchConfig
from .progress import Progress
from .rows import Failure, Row
from .splits import Splits, Subset


@dataclass
class Context:
    """One table's configuration, splits and progress channel."""

    config: BenchConfig
    splits: Splits
    say: Progress
    test_labels: np.ndarray = field(init=False)

    def __post_init__(self):
        self.test_labels = self.splits.test.labels()

    @property
    def modality(self) -> str:
        return self.splits.train.modality

    @property
    def test_refs(self) -> list:
        """What to decode for the test set: its items' paths, arrays or texts."""
        return [item.ref for item in self.splits.test.items]


class Table:
    """The rows and failures of one table, in the order they ran."""

    def __init__(self, say: Progress):
        self.say = say
        self.rows: list[Row] = []
        self.errors: list[Failure] = []

    def attempt(self, subset: Subset, strategy: str, run: Callable[[], Row]) -> Row | None:
        """Add the row ``run()`` returns, or record its failure (returns None)."""
        try:
            row = run()
        except (FeatxError, ValueError, RuntimeError, ArithmeticError) as e:  # a failed row never ends the run
            self.errors.append(Failure(size=subset.size, seed=subset.seed, n_train=subset.n_train,
                                       strategy=strategy, error=f"{type(e).__name__}: {e}"))
            self.say(f"  FAILED {strategy} size={subset.size} seed={subset.seed}: {type(e).__name__}: {e}")
            return None
        finally:
            self.say.row_done()
        self.rows.append(row)
        return row

    def add(self, row: Row) -> Row:
        """Add a row made from rows already in the table (it cannot fail on its own)."""
        self.rows.append(row)
        return row

    def report(self, row: Row, details: str) -> None:
        """One progress line for a finished row."""
        self.say(f"  size={row.size:>4} seed={row.seed} {row.strategy:<24} acc {row.accuracy:.3f} {details}")
