"""``featx models``, ``featx export``, ``featx doctor``."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..machine import has_vnni
from .flags import add_json_flag, positive_int


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered backbones: bundled ones and the spec files in "
                                      "$FEATX_MODELS, with where each came from")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export", help="export a backbone to ONNX (+ spec JSON), checking parity with PyTorch")
    p.add_argument("name", nargs="?", default=None,
                   help="registered name, timm:NAME, hf:HUB_ID, hf:/path/to/model (hf:MODEL#image or #text: a CLIP/"
                        "SigLIP tower); or an exported .onnx file to make an int8/fp16 variant of")
    p.add_argument("--spec", type=Path, default=None, metavar="FILE.toml",
                   help="export the backbone a spec file describes (the bundled TOML format) instead of a name")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $FEATX_HOME/models)")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset of the export (default %(default)s)")
    p.add_argument("--force", action="store_true", help="re-export even if an export exists")
    p.add_argument("--layers", default=None, metavar="L1,L2",
                   help="also output the pooled features of these intermediate layers (Lite0: block0..block15; "
                        "MiniLM: layer0..layer6), each parity-checked; the cache keeps each as its own feature set")
    p.add_argument("--no-fuse", dest="fuse", action="store_false",
                   help="text encoders: keep the portable op-by-op graph instead of ONNX Runtime's fused "
                        "attention kernels (faster, but ONNX Runtime only)")
    variant = p.add_mutually_exclusive_group()
    variant.add_argument("--quantize", choices=["int8"], default=None,
                         help="also write NAME-int8.onnx: static QDQ int8 calibrated on --calibration (CNNs), "
                              "dynamic int8 (transformers); parity vs fp32 is measured and recorded")
    variant.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                         help="fp16: also write NAME-fp16.onnx (fp16 compute, fp32 inputs/outputs; for GPUs)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="featx dataset (folder, manifest, builtin:NAME) to calibrate int8 on and to measure parity "
                        "(default: crops of sklearn's sample photos + builtin:digits for images)")
    p.add_argument("--calibration-size", type=positive_int, default=None, metavar="N",
                   help="calibration items (default 256)")
    p.add_argument("--calibration-method", choices=["minmax", "percentile"], default="minmax",
                   help="activation ranges for static int8 (percentile: clips outliers, needs more memory)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("doctor", help="report onnxruntime packages, providers and CUDA; exit 1 on a problem")
    add_json_flag(p)
    p.set_defaults(func=cmd_doctor)


def cmd_models(args) -> int:
    from ..specs.exported import exported_path
    from ..specs.registry import Registry

    registry = Registry.scan()
    rows = [("name", "modality", "dim", "source", "exported", "spec")]
    for name in sorted(registry.entries):
        entry = registry.entries[name]
        spec = entry.spec
        source = ", ".join(spec.source.get("packages", [])) or spec.source.get("kind", "")
        if spec.source.get("model"):
            source = f"{spec.source['kind']} {spec.source['model']}"
        where = "bundled" if entry.origin == "bundled" else str(entry.path)
        rows.append((spec.name, spec.modality, str(spec.dim or "-"), source,
                     "yes" if exported_path(spec.name).exists() else "no", where))
    rows.append(("timm:NAME", "image", "-", "timm (hub download)", "-", "recipe"))
    rows.append(("hf:MODEL", "image/text", "-", "transformers: hub id or folder", "-", "recipe"))
    rows.append(("hf:MODEL#image|#text", "image/text", "-", "CLIP/SigLIP tower", "-", "recipe"))
    args.console.result(_table(rows))
    for problem in registry.problems.values():
        args.console.warn(str(problem))
    return 1 if registry.problems else 0


def cmd_export(args) -> int:
    from ..specs.exported import read_spec_file
    from ..specs.registry import load_spec_file
    from ..torchmodels.provision import export_backbone

    say = args.console.result
    if (args.name is None) == (args.spec is None):
        raise UsageError("give a backbone NAME or --spec FILE.toml (one of them)")
    target = load_spec_file(args.spec).resolve() if args.spec is not None else args.name
    args.name = args.name or target.name
    mode = args.quantize or (args.precision if args.precision != "fp32" else None)
    if mode is None and (args.calibration is not None or args.calibration_size is not None):
        raise UsageError("--calibration and --calibration-size go with --quantize int8 or --precision fp16")
    if args.name.endswith(".onnx") and mode is None:
        raise UsageError(f"{args.name} is already an ONNX file: give --quantize int8 or --precision fp16 "
                         "to make a variant of it, or a backbone name to export")
    if mode == "int8" and not has_vnni():
        args.console.warn("this CPU has no VNNI (AVX512-VNNI or AVX-VNNI): int8 gains less speed here than on "
                          "VNNI CPUs, and ONNX Runtime's int8 kernels can saturate without it (featx uses 7-bit "
                          "weights, reduce_range, against that). Expect a lower probe accuracy than fp32; compare "
                          "before switching.")
    made = export_backbone(target, args.out, opset=args.opset, force=args.force, quantize=args.quantize,
                           precision=args.precision, calibration=args.calibration,
                           calibration_size=args.calibration_size, calibration_method=args.calibration_method,
                           fuse=args.fuse, layers=args.layers)
    result = made.export
    if result is not None:
        say(f"exported {args.name} -> {result.onnx_path}")
        say(f"spec      {result.spec_path}")
        say(f"sha256    {result.sha256}")
        say(f"parity    max |onnxruntime - torch| = {result.max_abs_diff:.2e} on real inputs (tolerance 1e-4)")
        record = read_spec_file(result.spec_path)
        if record["spec"]["name"] != args.name:  # layers: a model of its own, beside the plain export
            say(f"name      {record['spec']['name']} (use it as --model '{record['spec']['name']}'; "
                "the plain export, and the caches and heads made with it, are unchanged)")
        for layer, diff in record["parity"].get("layers", {}).items():
            dim = record["spec"].get("layers", {}).get(layer, record["spec"]["dim"])
            say(f"layer     {layer} (dim {dim}): max |onnxruntime - torch| = {diff:.2e}")
        fused = record.get("fusion", {}).get("fused_ops")
        if fused:
            say("fused     " + ", ".join(f"{op} x{n}" for op, n in fused.items()) + " (ONNX Runtime kernels)")
    variant = made.variant
    if variant is None:
        return 0
    q = variant.record["quantization"]
    say(f"{mode:<9} {variant.onnx_path} ({variant.method})")
    say(f"spec      {variant.spec_path}")
    say(f"sha256    {variant.sha256}")
    calib = q.get("calibration")
    if calib:
        say(f"calibrated on {calib['size']} items of {calib['source']}"
            + (f" ({calib['description']})" if calib.get("description") else ""))
    if variant.cosine_mean is None:
        say(f"parity    not measured on this machine: {variant.record['parity'].get('not_measured', '')}")
    else:
        say(f"parity    cosine vs fp32 mean {variant.cosine_mean:.4f}, min {variant.cosine_min:.4f}; "
            f"max |{mode} - fp32| = {variant.max_abs_diff:.2e} on {variant.record['parity']['inputs']}")
    return 0


def cmd_doctor(args) -> int:
    from .doctor import diagnose

    report = diagnose()
    problems = [key for key, value in report.items() if str(value).startswith("PROBLEM")]
    if args.json:
        args.console.document({"report": report, "problems": problems, "ok": not problems})
    args.console.result("\n".join(f"{key:<22} {value}" for key, value in report.items()))
    return 1 if problems else 0


def _table(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
