"""``featx deploy``: a saved head and its backbone -> one ONNX file (``featx predict`` runs it)."""

from __future__ import annotations

from pathlib import Path

from .flags import add_batch_size_flag, add_json_flag, positive_int

# featx.deploy is imported inside the command: it loads scikit-learn and featx.heads, which
# `featx --help` and the other commands need not wait for.

#: ONNX Runtime's input types, as the summary prints them.
_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}


def register(sub) -> None:
    p = sub.add_parser("deploy", help="fuse a saved head with its backbone into one ONNX file, gated on parity "
                                      "with `featx predict`")
    p.add_argument("head", type=Path, help="a saved head (.skops, with its .json beside it)")
    p.add_argument("--out", type=Path, default=None, help="the .onnx file to write (default: HEAD with .onnx); "
                                                          "a text model's tokenizer goes beside it")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="check that the head was trained on this variant of its backbone (default: whichever "
                        "it was; the deployed file holds exactly that one)")
    p.add_argument("--model", default=None,
                   help="where to load the backbone from (default: as recorded with the head; the fingerprint "
                        "must match)")
    p.add_argument("--parity-data", default=None, metavar="DATA",
                   help="items for the parity gate (default: a sample of the head's training data when it can "
                        "be opened, else bundled items)")
    p.add_argument("--parity-items", type=positive_int, default=None, metavar="N",
                   help="items the gate runs (default 128)")
    add_batch_size_flag(p, "items per ONNX Runtime call in the gate")
    p.add_argument("--raw", action="store_true",
                   help="also write STEM.raw.onnx: encoded image bytes or a string in, decoding, resizing and "
                        "tokenising inside (onnxruntime-extensions); written when its labels agree with featx's "
                        "preprocessing on >= 99%% of the gate's items")
    add_json_flag(p)
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args) -> int:
    from ..deploy import DEFAULT_PARITY_ITEMS, deploy_head

    say = args.console.result
    n_items = args.parity_items or DEFAULT_PARITY_ITEMS
    result = deploy_head(args.head, args.out, precision=args.precision, model=args.model,
                         parity_data=args.parity_data, parity_items=n_items, batch_size=args.batch_size)
    facts = result.metadata
    say(f"deployed  {args.head} + {result.backbone} ({result.precision}) -> {result.path} "
        f"({result.path.stat().st_size / 1e6:.1f} MB)")
    inputs = ", ".join(f"{i['name']} {_TYPES.get(i['type'], i['type'])} ({', '.join(map(str, i['shape']))})"
                       for i in facts["inputs"])
    say(f"inputs    {inputs}; preprocessing in metadata_props['featx.preprocess']")
    say(f"outputs   {', '.join(facts['outputs'])}; classes {', '.join(facts['classes'][:10])}"
        + (" ..." if len(facts["classes"]) > 10 else ""))
    recorded = facts["backbone"]["export_parity"] or {}
    if facts["backbone"]["quantization"] and recorded.get("cosine_mean") is not None:
        say(f"variant   {facts['backbone']['quantization']}: cosine to fp32 mean {recorded['cosine_mean']:.4f}, "
            f"min {recorded['cosine_min']:.4f} (recorded by featx export)")
    if result.tokenizer_path is not None:
        say(f"tokenizer {result.tokenizer_path}")
    say(f"parity    {result.parity.summary()}")
    raw = None
    if args.raw:
        from ..deploy.raw import raw_variant

        raw_path, agreement = raw_variant(result.path, data=args.parity_data, n_items=n_items)
        raw = {"path": str(raw_path), "agreement": agreement.to_dict()}
        say(f"raw input {raw_path} ({raw_path.stat().st_size / 1e6:.1f} MB): {agreement.summary()}")
    if args.json:
        args.console.document({"path": str(result.path), "tokenizer": result.tokenizer_path, "head": str(args.head),
                               "backbone": result.backbone, "precision": result.precision,
                               "classes": facts["classes"], "parity": result.parity.to_dict(), "raw": raw})
    return 0
