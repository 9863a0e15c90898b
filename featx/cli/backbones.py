"""``featx models``, ``featx export``, ``featx doctor``."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered backbones")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export", help="export a backbone to ONNX (+ spec JSON), checking parity with PyTorch")
    p.add_argument("name", help="registered name, timm:NAME or hf:HUB_ID")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $FEATX_HOME/models)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--force", action="store_true", help="re-export even if an export exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("doctor", help="report onnxruntime packages, providers and CUDA")
    p.set_defaults(func=cmd_doctor)


def cmd_models(args) -> int:
    from ..backbone import exported_path
    from ..registry import list_specs

    rows = [("name", "modality", "dim", "source", "exported")]
    for spec in list_specs():
        source = ", ".join(spec.source.get("packages", [])) or spec.source.get("kind", "")
        rows.append((spec.name, spec.modality, str(spec.dim), source, "yes" if exported_path(spec.name).exists() else "no"))
    rows.append(("timm:NAME", "image", "-", "timm (hub download)", "-"))
    rows.append(("hf:HUB_ID", "text", "-", "transformers (hub download)", "-"))
    _print_table(rows)
    return 0


def cmd_export(args) -> int:
    from ..export import export

    result = export(args.name, args.out, opset=args.opset, force=args.force)
    print(f"exported {args.name} -> {result.onnx_path}")
    print(f"spec      {result.spec_path}")
    print(f"sha256    {result.sha256}")
    print(f"parity    max |onnxruntime - torch| = {result.max_abs_diff:.2e} on real inputs (tolerance 1e-4)")
    return 0


def cmd_doctor(args) -> int:
    from ..doctor import diagnose

    report = diagnose()
    for key, value in report.items():
        print(f"{key:<22} {value}")
    return 1 if any(str(v).startswith("PROBLEM") for v in report.values()) else 0


def _print_table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
