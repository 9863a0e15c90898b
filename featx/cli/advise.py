"""``featx advise``: which transfer strategy for your data (a budgeted pilot, extrapolated learning curves)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .flags import add_json_flag, positive_int


def duration(text: str) -> float:
    """``"90"``/``"90s"`` -> 90.0, ``"10m"`` -> 600.0, ``"1h"`` -> 3600.0."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"a budget is a positive duration like 90s, 10m or 1h; got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def register(sub) -> None:
    p = sub.add_parser(
        "advise", help="which transfer strategy for your data: a budgeted pilot with extrapolated learning curves",
        description=("Measures frozen probes (logreg/SVM/kNN on every layer the backbone exports) and simple "
                     "baselines on nested subsets of DATA, several seeds, then short fine-tuning pilots at the "
                     "largest size reached, until the budget is spent; fits a saturating power law per strategy "
                     "with bootstrap intervals; recommends the strategy with the "
                     "highest predicted score at DATA's full size and says what 2x and 5x the labels would give. "
                     "Imbalanced classes are scored by balanced accuracy. Writes OUT/<stem>.json, .md and .png."))
    p.add_argument("data", help="labelled dataset: folder of class folders, CSV/manifest, builtin:NAME")
    p.add_argument("--model", default=None, help="backbone (default efficientnet-lite0 / all-minilm-l6-v2)")
    p.add_argument("--budget", type=duration, default=600.0, help="time for the pilot: 90s, 10m, 1h (default 10m)")
    p.add_argument("--test", default=None, metavar="DATA", help="labelled test data (default: a stratified 25%% holdout)")
    p.add_argument("--per-class", type=positive_int, default=None, metavar="N",
                   help="advise on at most N items per class")
    p.add_argument("--seeds", type=positive_int, default=3, metavar="N", help="nested subsets per size (default 3)")
    p.add_argument("--test-size", type=positive_int, default=None, metavar="N", help="stratified test subset size")
    p.add_argument("--heads", default="logreg,svm,knn", help="frozen heads, comma-separated (default logreg,svm,knn)")
    p.add_argument("--finetune", default="auto", metavar="MODES",
                   help="fine-tuning pilots: auto (head,partial,full,lp-ft; setfit for texts; when torch is "
                        "installed), none, or modes comma-separated")
    p.add_argument("--finetune-steps", type=positive_int, default=None, metavar="N",
                   help="cap of training steps per fine-tuning pilot (default 40)")
    p.add_argument("--out", type=Path, default=Path("advice"), help="output folder (default ./advice)")
    add_json_flag(p)
    p.set_defaults(func=cmd_advise)


def cmd_advise(args) -> int:
    from ..strategy import advise
    from ..strategy.report import summary_text, to_dict, write_reports
    from ..bench.config import slug

    console = args.console
    say = None if console.quiet else console.note
    from ..strategy.pilot import FINETUNE_STEPS

    finetune = {"auto": "auto", "none": None}.get(args.finetune, tuple(m for m in args.finetune.split(",") if m))
    advice = advise(args.data, model=args.model, budget_s=args.budget, test=args.test, per_class=args.per_class,
                    seeds=args.seeds, heads=tuple(h for h in args.heads.split(",") if h), finetune=finetune,
                    finetune_steps=args.finetune_steps or FINETUNE_STEPS, test_size=args.test_size, progress=say)
    paths = write_reports(advice, args.out, f"advice-{slug(args.data)}")
    if console.json:
        console.document(to_dict(advice))
    console.result(summary_text(advice))
    console.note(f"wrote {paths['json']}, {paths['markdown']} and {paths['plot']}")
    return 0
