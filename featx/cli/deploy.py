"""``featx deploy``: a saved head and its backbone -> one ONNX file (``featx predict`` runs it)."""

from __future__ import annotations

from pathlib import Path

from ..backbone import DEFAULT_BATCH_SIZE


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
    p.add_argument("--parity-items", type=int, default=None, metavar="N", help="items the gate runs (default 128)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="items per ONNX Runtime call in the gate")
    p.add_argument("--raw", action="store_true",
                   help="also write STEM.raw.onnx: encoded image bytes or a string in, decoding, resizing and "
                        "tokenising inside (onnxruntime-extensions); written when its labels agree with featx's "
                        "preprocessing on >= 99%% of the gate's items")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args) -> int:
    from ..deploy import DEFAULT_PARITY_ITEMS, deploy_head

    result = deploy_head(args.head, args.out, precision=args.precision, model=args.model,
                         parity_data=args.parity_data, parity_items=args.parity_items or DEFAULT_PARITY_ITEMS,
                         batch_size=args.batch_size)
    facts = result.metadata
    size = result.path.stat().st_size / 1e6
    print(f"deployed  {args.head} + {result.backbone} ({result.precision}) -> {result.path} ({size:.1f} MB)")
    types = {"tensor(float)": "float32", "tensor(int64)": "int64"}
    inputs = ", ".join(f"{i['name']} {types.get(i['type'], i['type'])} ({', '.join(map(str, i['shape']))})"
                       for i in facts["inputs"])
    print(f"inputs    {inputs}; preprocessing in metadata_props['featx.preprocess']")
    print(f"outputs   {', '.join(facts['outputs'])}; classes {', '.join(facts['classes'][:10])}"
          + (" ..." if len(facts["classes"]) > 10 else ""))
    recorded = facts["backbone"]["export_parity"] or {}
    if facts["backbone"]["quantization"] and recorded.get("cosine_mean") is not None:
        print(f"variant   {facts['backbone']['quantization']}: cosine to fp32 mean {recorded['cosine_mean']:.4f}, "
              f"min {recorded['cosine_min']:.4f} (recorded by featx export)")
    if result.tokenizer_path is not None:
        print(f"tokenizer {result.tokenizer_path}")
    print(f"parity    {result.parity.summary()}")
    if args.raw:
        from ..deploy.raw import raw_variant

        path, agreement = raw_variant(result.path, data=args.parity_data,
                                      n_items=args.parity_items or DEFAULT_PARITY_ITEMS)
        print(f"raw input {path} ({path.stat().st_size / 1e6:.1f} MB): {agreement.summary()}")
    return 0
