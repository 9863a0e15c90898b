"""A raw-input variant of a deployed file: encoded image bytes or a text in, label and probabilities out.

Built on a deployed file (:func:`featx.deploy.deploy_head`) with onnxruntime-extensions' custom
ops for what plain ONNX cannot do, and plain ONNX for the rest::

    image (n_bytes,) uint8 --DecodeImage--> BGR (H, W, 3) --> RGB --resample (Pillow's weights, as two
        matrix products, 8-bit rounding between the passes)--> centre crop --> (x / 255 - mean) / std
        --> pixel_values (1, 3, S, S) --> the deployed graph --> label (1,), probabilities (1, C)
    text (1,) string --BertTokenizer (WordPiece vocabulary of the tokenizer, lower case, accents
        stripped, truncation)--> input_ids, attention_mask, token_type_ids (1, L) --> the deployed graph

One item per call. The resampling computes the filter weights in the graph the way Pillow's
``resize`` does (bicubic, bilinear, box, hamming or lanczos, antialiased when shrinking, then
Pillow's 22-bit fixed point and uint8 rounding after each pass), so it follows featx's
preprocessing closely; the image decoder is not Pillow's, and transparent pixels are not
composited on white as featx does. So the variant *agrees* with featx rather than being
identical: :func:`raw_variant` measures the share of equal labels on real items and refuses a
variant under :data:`MIN_AGREEMENT`. Running it needs ``onnxruntime-extensions``
(``featx[deploy]``): :func:`raw_session`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DeployError, InputError
from ..extras import require
from ..sources.refs import is_reference, read_bytes
from .compose import default_opset, read_metadata_props, set_metadata
from .model import DeployedModel
from .parity import gate_items

__all__ = ["raw_variant", "raw_session", "raw_feed", "preprocessing_model", "measure_agreement", "RawAgreement",
           "MIN_AGREEMENT", "FILTERS"]

#: Share of labels the raw variant must give as featx's preprocessing does, on real items.
MIN_AGREEMENT = 0.99
#: Pillow's filters: name -> (support, weight function of |x| as ONNX ops; see :func:`_filter`).
FILTERS = {"bicubic": 2.0, "bilinear": 1.0, "box": 0.5, "hamming": 1.0, "lanczos": 3.0}
#: Pillow's fixed-point precision for 8-bit resampling (``PRECISION_BITS`` in Resample.c).
_PRECISION_BITS = 22
_EXTENSIONS = "com.microsoft.extensions"
_CONTRIB = "ai.onnx.contrib"


def _extensions():
    return require("onnxruntime_extensions", "deploy", "a raw-input model")


def raw_session(path, threads: int | None = None):
    """An ONNX Runtime session of a raw-input file, with onnxruntime-extensions' ops registered."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(_extensions().get_library_path())
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def raw_feed(item, modality: str) -> dict:
    """The raw file's input for one item: an image's encoded bytes (path, bytes, uint8 array or a reference
    of :mod:`featx.sources.refs`), or a text."""
    if modality == "text":
        return {"text": np.array([item], dtype=object)}
    if isinstance(item, np.ndarray):  # an in-memory image (a built-in dataset): lossless PNG bytes
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(item).save(buf, format="PNG")
        item = buf.getvalue()
    elif isinstance(item, (str, os.PathLike)):
        item = Path(item).read_bytes()
    elif is_reference(item):  # a tar member or a table cell
        item = read_bytes(item)
    return {"image": np.frombuffer(bytes(item), dtype=np.uint8)}


class _Graph:
    """Nodes and constants of the preprocessing graph, with unique names."""

    def __init__(self):
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"raw/{hint}_{self._n}"

    def const(self, value, dtype=np.float64) -> str:
        from onnx import numpy_helper

        name = self.name("const")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs, outputs=None, domain: str = "", **attrs) -> str:
        from onnx import helper

        outputs = outputs or [self.name(op_type.lower())]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.name(op_type),
                                           domain=domain, **attrs))
        return outputs[0]


def _filter(g: _Graph, x: str, kind: str) -> str:
    """Pillow's filter functions (Resample.c) of ``x`` (float64), as ONNX ops."""
    ax = g.op("Abs", x)
    if kind == "bicubic":  # a = -0.5
        a = -0.5
        inner = g.op("Sub", g.op("Mul", g.const(a + 2), ax), g.const(a + 3))  # ((a + 2) x - (a + 3)) x^2 + 1
        near = g.op("Add", g.op("Mul", g.op("Mul", inner, ax), ax), g.const(1.0))
        far = g.op("Mul", g.op("Sub", g.op("Mul", g.op("Add", g.op("Mul", g.op("Sub", ax, g.const(5.0)), ax),
                                                          g.const(8.0)), ax), g.const(4.0)), g.const(a))
        inside = g.op("Where", g.op("Less", ax, g.const(1.0)), near, far)
        return g.op("Where", g.op("Less", ax, g.const(2.0)), inside, g.const(0.0))
    if kind == "bilinear":
        return g.op("Max", g.op("Sub", g.const(1.0), ax), g.const(0.0))
    if kind == "box":  # 1 on (-0.5, 0.5]
        keep = g.op("And", g.op("Greater", x, g.const(-0.5)), g.op("LessOrEqual", x, g.const(0.5)))
        return g.op("Cast", keep, to=11)
    if kind == "hamming":
        xpi = g.op("Mul", x, g.const(np.pi))
        safe = g.op("Where", g.op("Equal", ax, g.const(0.0)), g.const(1.0), xpi)
        sinc = g.op("Where", g.op("Equal", ax, g.const(0.0)), g.const(1.0), g.op("Div", g.op("Sin", safe), safe))
        value = g.op("Mul", sinc, g.op("Add", g.const(0.54), g.op("Mul", g.const(0.46), g.op("Cos", xpi))))
        return g.op("Where", g.op("Less", ax, g.const(1.0)), value, g.const(0.0))
    if kind == "lanczos":  # sinc(x) * sinc(x / 3) for |x| < 3
        def sinc(v):
            vpi = g.op("Mul", v, g.const(np.pi))
            zero = g.op("Equal", v, g.const(0.0))
            safe = g.op("Where", zero, g.const(1.0), vpi)
            return g.op("Where", zero, g.const(1.0), g.op("Div", g.op("Sin", safe), safe))
        value = g.op("Mul", sinc(x), sinc(g.op("Div", x, g.const(3.0))))
        return g.op("Where", g.op("Less", ax, g.const(3.0)), value, g.const(0.0))
    raise DeployError(f"no raw-input resampling for interpolation {kind!r}; featx supports {sorted(FILTERS)}")


def _weights(g: _Graph, kind: str, n_in: str, in0: str, scale: str, n_out: int) -> str:
    """Pillow's fixed-point weights (n_out, n_in) of one axis (``precompute_coeffs`` in Resample.c).

    Output ``i`` is centred on input coordinate ``in0 + (i + 0.5) * scale``; each operation is
    Pillow's, in its order, so that the weights round as Pillow's do.
    """
    fs = g.op("Max", scale, g.const(1.0))  # filterscale: antialiased when shrinking
    support = g.op("Mul", g.const(FILTERS[kind]), fs)
    centre = g.op("Add", in0, g.op("Mul", g.const(np.arange(n_out, dtype=np.float64) + 0.5), scale))  # (n_out,)
    j = g.op("Cast", g.op("Range", g.const(0, np.int64), n_in, g.const(1, np.int64)), to=11)  # (n_in,)
    column = g.op("Unsqueeze", j, g.const([0], np.int64))  # (1, n_in)
    centre = g.op("Unsqueeze", centre, g.const([1], np.int64))  # (n_out, 1)
    offset = g.op("Add", g.op("Sub", column, centre), g.const(0.5))  # (n_out, n_in): (j - centre) + 0.5
    # Pillow's window: xmin = (int)(centre - support + 0.5), xmax = (int)(centre + support + 0.5), j in [xmin, xmax)
    first = g.op("Floor", g.op("Add", g.op("Sub", centre, support), g.const(0.5)))
    last = g.op("Floor", g.op("Add", g.op("Add", centre, support), g.const(0.5)))
    window = g.op("And", g.op("GreaterOrEqual", column, first), g.op("Less", column, last))
    raw = g.op("Where", window, _filter(g, g.op("Mul", offset, g.op("Reciprocal", fs)), kind), g.const(0.0))
    total = g.op("ReduceSum", raw, g.const([1], np.int64), keepdims=1)
    normal = g.op("Div", raw, g.op("Where", g.op("Equal", total, g.const(0.0)), g.const(1.0), total))
    fixed = g.op("Mul", normal, g.const(float(1 << _PRECISION_BITS)))
    # C's (int)(w + 0.5) for w >= 0 and (int)(w - 0.5) for w < 0
    return g.op("Where", g.op("Less", fixed, g.const(0.0)), g.op("Ceil", g.op("Sub", fixed, g.const(0.5))),
                g.op("Floor", g.op("Add", fixed, g.const(0.5))))


def _clip8(g: _Graph, acc: str) -> str:
    """Pillow's ``clip8((1 << (PRECISION_BITS - 1)) + sum) >> PRECISION_BITS``, on exact float64 integers."""
    half = g.const(float(1 << (_PRECISION_BITS - 1)))
    shifted = g.op("Floor", g.op("Div", g.op("Add", acc, half), g.const(float(1 << _PRECISION_BITS))))
    return g.op("Clip", shifted, g.const(0.0), g.const(255.0))


def _image_graph(g: _Graph, prep: dict, input_name: str) -> str:
    """Encoded bytes -> featx's ``pixel_values`` (1, 3, S, S) float32 (see the module docstring)."""
    kind, size, resize = prep["interpolation"], int(prep["size"]), prep.get("resize")
    if kind not in FILTERS:
        raise DeployError(f"no raw-input resampling for interpolation {kind!r}; featx supports {sorted(FILTERS)}")
    bgr = g.op("DecodeImage", "image", domain=_EXTENSIONS)  # (H, W, 3) uint8, BGR
    rgb = g.op("Cast", g.op("Gather", bgr, g.const([2, 1, 0], np.int64), axis=2), to=11)
    chw = g.op("Transpose", rgb, perm=[2, 0, 1])  # (3, H, W) float64
    hw = g.op("Gather", g.op("Shape", rgb), g.const([0, 1], np.int64))
    h_in, w_in = (g.op("Gather", hw, g.const(i, np.int64)) for i in (0, 1))
    hw64 = g.op("Cast", hw, to=11)
    if resize is None:  # straight to size x size: Pillow's box is the whole image
        in0, scale = g.const([0.0, 0.0]), g.op("Div", hw64, g.const(float(size)))
    else:  # shorter side to `resize` (Python's round: half to even, as ONNX Round), then featx's crop window
        if prep.get("resize_mode", "window") == "full":  # transformers' rule: int(resize * side / shorter)
            new_hw = g.op("Floor", g.op("Div", g.op("Mul", hw64, g.const(float(resize))),
                                        g.op("ReduceMin", hw64, keepdims=0)))
        else:
            ratio = g.op("Div", g.const(float(resize)), g.op("ReduceMin", hw64, keepdims=0))
            new_hw = g.op("Max", g.op("Round", g.op("Mul", hw64, ratio)), g.const(float(size)))
        start = g.op("Floor", g.op("Div", g.op("Sub", new_hw, g.const(float(size))), g.const(2.0)))  # left, top
        step = g.op("Div", hw64, new_hw)  # featx's box: (left * sx, top * sy, (left + size) * sx, ...)
        # Pillow takes the box as C floats: float32 corners, their difference in float32
        in0 = g.op("Cast", g.op("Mul", start, step), to=1)
        in1 = g.op("Cast", g.op("Mul", g.op("Add", start, g.const(float(size))), step), to=1)
        scale = g.op("Div", g.op("Cast", g.op("Sub", in1, in0), to=11), g.const(float(size)))
        in0 = g.op("Cast", in0, to=11)
    in0_h, in0_w, scale_h, scale_w = (g.op("Gather", v, g.const(i, np.int64)) for v in (in0, scale) for i in (0, 1))
    rows = _weights(g, kind, h_in, in0_h, scale_h, size)  # (S, H)
    cols = _weights(g, kind, w_in, in0_w, scale_w, size)  # (S, W)
    across = _clip8(g, g.op("MatMul", chw, g.op("Transpose", cols, perm=[1, 0])))  # (3, H, S): Pillow's first pass
    pixels = _clip8(g, g.op("MatMul", rows, across))  # (3, S, S)
    std = np.asarray(prep["std"], np.float32)
    scale32 = (1.0 / (255.0 * std))[:, None, None]
    offset32 = (np.asarray(prep["mean"], np.float32) / std)[:, None, None]
    x = g.op("Mul", g.op("Cast", pixels, to=1), g.const(scale32, np.float32))
    x = g.op("Sub", x, g.const(offset32, np.float32))
    return g.op("Unsqueeze", x, g.const([0], np.int64), outputs=[input_name])


def _vocabulary(tokenizer_json: Path, max_length: int) -> dict:
    """BertTokenizer attributes from a ``tokenizers`` WordPiece tokenizer.json, or DeployError."""
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
    if model.get("type") != "WordPiece" or normalizer.get("type") != "BertNormalizer":
        raise DeployError("a raw-text variant needs a BERT WordPiece tokenizer (BertNormalizer + WordPiece); "
                          f"this one is {model.get('type')} with {normalizer.get('type')}")
    lower = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    vocab = model["vocab"]
    return {"vocab_file": "\n".join(sorted(vocab, key=vocab.get)), "do_lower_case": int(lower),
            "strip_accents": int(lower if strip is None else strip), "max_length": int(max_length)}


def _text_graph(g: _Graph, attrs: dict, outputs: dict[str, str]) -> None:
    """A string (1,) -> ``input_ids``, ``attention_mask``, ``token_type_ids`` (1, L) int64, named by ``outputs``."""
    ids, types, mask = (g.name(n) for n in ("ids", "types", "mask"))
    g.op("BertTokenizer", "text", outputs=[ids, types, mask], domain=_CONTRIB, **attrs)
    axis = g.const([0], np.int64)
    for source, name in ((ids, "input_ids"), (mask, "attention_mask"), (types, "token_type_ids")):
        if name in outputs:
            g.op("Unsqueeze", source, axis, outputs=[outputs[name]])


@dataclass(frozen=True)
class RawAgreement:
    """How often the raw variant gives the label featx's own preprocessing gives, on real items."""

    n_items: int
    labels_agree: float
    max_abs_diff: float | None
    items: str
    minimum: float = MIN_AGREEMENT

    @property
    def passed(self) -> bool:
        return self.n_items > 0 and self.labels_agree >= self.minimum

    def summary(self) -> str:
        proba = "" if self.max_abs_diff is None else f", max |raw - featx| = {self.max_abs_diff:.3g} in probabilities"
        return (f"labels agree with featx's preprocessing on {100 * self.labels_agree:.1f}% of {self.items}{proba} "
                f"(minimum {100 * self.minimum:g}%)")

    def to_dict(self) -> dict:
        return {"n_items": self.n_items, "labels_agree": self.labels_agree, "max_abs_diff": self.max_abs_diff,
                "items": self.items, "minimum": self.minimum}


def preprocessing_model(modality: str, *, preprocess: dict, outputs: dict[str, str], opset: int,
                        tokenizer_json=None, ir_version: int = 8):
    """The graph from a raw input (``image`` bytes or ``text``) to a backbone's inputs, as a ModelProto.

    Parameters
    ----------
    modality : {"image", "text"}
    preprocess : dict
        featx's preprocessing (``ImagePreprocess.to_dict()`` / ``TextPreprocess.to_dict()``).
    outputs : dict
        Backbone input name -> name of the graph output that feeds it.
    opset : int
        Default-domain opset (the deployed file's).
    tokenizer_json : path, optional
        Texts: the ``tokenizers`` file (a BERT WordPiece tokenizer).
    """
    from onnx import TensorProto, helper

    g = _Graph()
    if modality == "image":
        output = next(iter(outputs.values()))
        _image_graph(g, preprocess, output)
        inputs = [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n_bytes"])]
        declared = [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 3, "S", "S"])]
        domain = _EXTENSIONS
    else:
        if preprocess.get("padding", "longest") != "longest":
            raise DeployError(f"no raw-text variant for padding={preprocess['padding']!r} (texts padded to max_length, "
                              "as SigLIP's text tower needs); deploy without --raw")
        _text_graph(g, _vocabulary(tokenizer_json, int(preprocess["max_length"])), outputs)
        inputs = [helper.make_tensor_value_info("text", TensorProto.STRING, [1])]
        declared = [helper.make_tensor_value_info(o, TensorProto.INT64, [1, "L"]) for o in outputs.values()]
        domain = _CONTRIB
    graph = helper.make_graph(g.nodes, "featx_raw_input", inputs, declared, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(domain, 1)])
    model.ir_version = ir_version
    return model


def measure_agreement(session, model, items, description: str, minimum: float = MIN_AGREEMENT) -> RawAgreement:
    """Labels of the raw file (``session``) vs the deployed file with featx's preprocessing, item by item."""
    same, diffs, n = 0, [], 0
    for item in items:
        try:
            decoded = model.decode(item.ref, item.id)
        except InputError:
            continue  # featx refuses it: nothing to agree with
        label, proba = model.predict_feeds(model.prepare([decoded]))
        raw = session.run(None, raw_feed(decoded if model.modality == "text" else item.ref, model.modality))
        n += 1
        same += str(raw[0][0]) == str(label[0])
        if proba is not None:
            diffs.append(float(np.abs(raw[1][0] - proba[0]).max()))
    return RawAgreement(n, same / n if n else 0.0, max(diffs) if diffs else None, description, minimum)


def raw_variant(deployed, out=None, *, data=None, n_items: int = 128, minimum: float = MIN_AGREEMENT):
    """Write the raw-input variant of a deployed file, if its labels agree with featx's often enough.

    Parameters
    ----------
    deployed : path
        A file written by ``featx deploy``.
    out : path, optional
        Default: ``STEM.raw.onnx`` beside it.
    data : str, path or Dataset, optional
        Items to measure the agreement on (default: as the deploy gate chooses them).
    n_items : int
    minimum : float
        Share of equal labels required.

    Returns
    -------
    (pathlib.Path, RawAgreement)

    Raises
    ------
    DeployError
        The agreement is under ``minimum`` (nothing written), or the preprocessing cannot be
        expressed (a tokenizer other than BERT's WordPiece, nearest-neighbour resizing).
    MissingDependencyError
        onnxruntime-extensions is not installed (``featx[deploy]``).
    """
    import onnx
    from onnx import compose

    _extensions()
    deployed = Path(deployed)
    model = DeployedModel(deployed, providers="cpu")
    base = onnx.load(str(deployed))
    names = model.session.input_names
    pre = preprocessing_model(model.modality, preprocess=model.metadata["preprocess"],
                              outputs={n: "raw/" + n for n in names}, opset=default_opset(base),
                              ir_version=base.ir_version, tokenizer_json=getattr(model, "tokenizer_path", None))
    fused = compose.merge_models(pre, base, io_map=[("raw/" + n, n) for n in names],
                                 producer_name="featx", doc_string="featx deploy --raw: preprocessing inside")
    out = Path(out) if out is not None else deployed.with_name(f"{deployed.stem}.raw.onnx")
    head = model.metadata.get("head") or {}
    items, description = gate_items({"train": head.get("train")}, model.modality, data=data, n=n_items)
    facts = read_metadata_props({p.key: p.value for p in base.metadata_props})
    facts["raw"] = {"input": "image: encoded bytes (n_bytes,) uint8" if model.modality == "image"
                    else "text: one string (1,)", "from": deployed.name,
                    "decoder": "onnxruntime-extensions DecodeImage" if model.modality == "image"
                    else "onnxruntime-extensions BertTokenizer"}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}-") as tmp:
        staged = Path(tmp) / out.name
        onnx.save(fused, str(staged))
        agreement = measure_agreement(raw_session(staged), model, items, description, minimum)
        if not agreement.passed:
            raise DeployError(f"the raw-input variant does not agree with featx's preprocessing often enough: "
                              f"{agreement.summary()}; {out} was not written")
        facts["raw"]["agreement"] = agreement.to_dict()
        set_metadata(fused, facts)
        onnx.save(fused, str(staged))
        os.replace(staged, out)
    return out, agreement
