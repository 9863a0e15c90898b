"""``featx demo``: the digits pipeline end to end on the bundled backbone and bundled data."""

from __future__ import annotations

from pathlib import Path

from ..errors import InstallError


def demo_pipeline() -> Path:
    """``pipelines/digits.toml`` from a checkout, or the copy shipped inside the wheel.

    Raises
    ------
    InstallError
        Neither is there (an incomplete installation).
    """
    here = Path(__file__).resolve().parent.parent
    candidates = (here / "pipelines" / "digits.toml", here.parent / "pipelines" / "digits.toml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InstallError(f"the demo pipeline digits.toml is missing (looked for {candidates[0]} and {candidates[1]}): "
                       "this featx installation is incomplete; reinstall it (pip install --force-reinstall featx)")


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the digits pipeline (EfficientNet-Lite0 + logreg/SVM/kNN) end to end")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..pipeline import run_pipeline  # deferred: it loads scikit-learn (~2 s), which `featx --help` need not wait for

    path = demo_pipeline()
    args.console.result(f"featx demo: {path.name} -> {args.out}/ (export, extract, train, evaluate, report)")
    run_pipeline(path, out_dir=args.out, progress=args.console.progress, echo=args.console.result)
    return 0
