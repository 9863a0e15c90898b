"""``featx bench``: frozen-feature heads vs fine-tuned baselines vs simple baselines."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from ..errors import ParameterError, UsageError
from .flags import folds, positive_int

# featx.bench is imported inside the functions that use it: it loads scikit-learn and featx.heads,
# which `featx --help` and the other commands need not wait for.

#: Options, in the order they are recorded in the report's command line.
_OPTIONS = ("dataset", "test", "backbone", "sizes", "seeds", "test_size", "image_size", "max_length", "heads",
            "modes", "finetune_sizes", "finetune_seeds", "lr_select_per_class", "epochs", "min_steps", "max_steps",
            "batch_size", "cv", "threads", "cache", "layers", "setfit_model", "setfit_max_steps", "out")


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark frozen-feature heads against fine-tuning and simple baselines",
        description=(
            "Runs, on the same training subsets, seeds and test set: majority class; logistic regression on raw "
            "pixels / TF-IDF; frozen-feature heads (logreg, SVM, kNN with model selection); fine-tuning (head "
            "only, partial, full, from scratch, LP-FT; SetFit for texts), a logreg on each intermediate layer. "
            "Writes OUT/<dataset>.json and OUT/<dataset>.md with plots "
            "(--quick: OUT/<dataset>.quick.*). Defaults: Fashion-MNIST and fine-foods, the stated presets. "
            "Progress: lines above a bar of the rows when stderr is a terminal; with -v, the lines wherever "
            "stderr goes (a log)."
        ),
    )
    p.add_argument("--quick", action="store_true",
                   help="few sizes, 2 seeds (1 for fine-tuning), tiny step budgets: under 10 minutes on 2 cores")
    p.add_argument("--dataset", action="append", default=None, metavar="DATA",
                   help="fashion-mnist, fine-foods, digits, builtin:NAME or any featx dataset (folder, manifest); "
                        "repeat for several (default: fashion-mnist and fine-foods)")
    p.add_argument("--test", default=None, metavar="DATA",
                   help="test dataset (default: the builtin's :test split, else a stratified 25%% holdout)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results)")
    p.add_argument("--backbone", default=None,
                   help="registered name, timm:NAME, hf:ID, or an exported .onnx file (frozen rows only: "
                        "--modes none); default: efficientnet-lite0 / all-minilm-l6-v2")
    p.add_argument("--sizes", default=None, help="samples per class, comma-separated, 'all' allowed (e.g. 1,5,10,all)")
    p.add_argument("--seeds", type=positive_int, default=None, metavar="N", help="number of seeds (0..N-1)")
    p.add_argument("--finetune-sizes", default=None, help="sizes that get fine-tuned rows (default: preset)")
    p.add_argument("--finetune-seeds", type=positive_int, default=None, metavar="N", help="seeds for fine-tuned rows")
    p.add_argument("--test-size", default=None, help="stratified test subset size, or 'all'")
    p.add_argument("--image-size", type=positive_int, default=None, help="input side in pixels (default 112)")
    p.add_argument("--max-length", type=positive_int, default=None, help="token limit for texts (default 128)")
    p.add_argument("--heads", default=None, help="frozen heads, comma-separated (default logreg,svm,knn; 'none')")
    p.add_argument("--modes", default=None,
                   help="fine-tuning modes, comma-separated: head,partial,full,scratch,lp-ft,setfit (default: all, "
                        "setfit for texts only; 'none')")
    p.add_argument("--no-baselines", action="store_true", help="skip the majority and logistic-regression baselines")
    p.add_argument("--lr-select-per-class", type=positive_int, default=None,
                   help="subset size for the learning-rate choice")
    p.add_argument("--epochs", type=float, default=None,
                   help="most fine-tuning epochs: the validation split chooses how many (early stopping)")
    p.add_argument("--min-steps", type=positive_int, default=None,
                   help="fewest fine-tuning steps per row (default: preset)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="most fine-tuning steps per row (default: preset)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="fine-tuning batch (default 32 images, 16 texts)")
    p.add_argument("--cv", type=folds, default=None, help="cross-validation folds for heads and baselines (default 5)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch / ONNX Runtime threads (default 2)")
    p.add_argument("--cache", default=None,
                   help="feature cache folder (default $FEATX_HOME/bench-cache/<dataset>, plus a hash of its path "
                        "when it is not a builtin)")
    p.add_argument("--layers", default=None, metavar="L1,L2",
                   help="intermediate layers of the frozen rows, a logreg on each and the layer chosen by CV "
                        "(default: Lite0 block2,block4,block7,block10,block14; MiniLM layer1..layer5; 'none')")
    p.add_argument("--setfit-model", default=None, metavar="FOLDER",
                   help="sentence-transformers folder for the SetFit rows (default: the backbone package's folder)")
    p.add_argument("--setfit-max-steps", type=positive_int, default=None, metavar="N",
                   help="cap on SetFit's contrastive steps (default: preset; its recipe: one epoch of pairs)")
    p.set_defaults(func=cmd_bench)


def command_line(args) -> str:
    """The command as it can be typed again."""
    parts = ["featx", "bench"]
    if args.quick:
        parts.append("--quick")
    for name in _OPTIONS:
        value = getattr(args, name, None)
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            parts += [f"--{name.replace('_', '-')}", str(v)]
    if args.no_baselines:
        parts.append("--no-baselines")
    return shlex.join(parts)


def _list(text):
    if text is None:
        return None
    text = text.strip().lower()
    return () if text in ("", "none") else tuple(t.strip() for t in text.split(",") if t.strip())


def _sizes(text, flag: str):
    from ..bench import parse_sizes

    if not text:
        return None
    try:
        return parse_sizes(text)
    except ParameterError as e:
        raise UsageError(f"{flag}: {e}") from None


def cmd_bench(args) -> int:
    from ..bench import DEFAULT_DATASETS, Progress, preset, run_benchmark

    datasets = args.dataset or list(DEFAULT_DATASETS)
    test_size = args.test_size
    if test_size is not None:
        if str(test_size).lower() == "all":
            test_size = 0
        else:
            try:
                test_size = int(test_size)
            except ValueError:
                raise UsageError(f"--test-size must be an int or 'all'. Got {args.test_size!r}.") from None
    overrides = dict(
        backbone=args.backbone, test=args.test, test_size=test_size or None,
        sizes=_sizes(args.sizes, "--sizes"),
        seeds=tuple(range(args.seeds)) if args.seeds else None,
        finetune_sizes=_sizes(args.finetune_sizes, "--finetune-sizes"),
        finetune_seeds=tuple(range(args.finetune_seeds)) if args.finetune_seeds else None,
        image_size=args.image_size, max_length=args.max_length,
        heads=_list(args.heads), finetune_modes=_list(args.modes),
        lr_select_per_class=args.lr_select_per_class, epochs=args.epochs, min_steps=args.min_steps,
        max_steps=args.max_steps, batch_size=args.batch_size, cv=args.cv, threads=args.threads, cache=args.cache,
        layers=_list(args.layers), setfit_model=args.setfit_model, setfit_max_steps=args.setfit_max_steps,
    )
    if args.no_baselines:
        overrides["baselines"] = False
    if len(datasets) > 1 and args.cache:
        raise UsageError("--cache names one cache folder: give one --dataset with it")
    out = args.out or Path("benchmarks/results")
    command = command_line(args)
    # -v: the progress lines even when stderr is not a terminal (a log of a long run)
    say = Progress(quiet=args.quiet, lines=True if args.verbose else None)
    for name in datasets:
        config = preset(name, quick=args.quick, **overrides)
        if test_size == 0:
            config = dataclasses.replace(config, test_size=None)
        result = run_benchmark(config, out, command=command, progress=say)
        lines = [f"  {line}" for line in result.conclusion]
        lines.append(f"{result.dataset}: {len(result.rows)} rows, {len(result.errors)} failed, "
                     f"{result.total_seconds / 60:.1f} min -> {Path(out) / (result.slug + '.md')}")
        args.console.result("\n".join(lines))
    return 0

