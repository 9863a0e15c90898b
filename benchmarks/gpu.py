"""featx on a GPU, in one command: ONNX Runtime CUDA fp32/fp16 vs PyTorch, extraction vs the raw session and vs decoding.

    python benchmarks/gpu.py            # on a GPU machine: ~3-5 min (8 at most) -> results/gpu.json, results/gpu.md
    python benchmarks/gpu.py --smoke    # anywhere: every section at tiny sizes, on the CPU when there is no GPU
                                        #   -> results/gpu.smoke.json (never the real file)

On a machine without a usable GPU (``featx doctor`` says why) it prints ``no GPU: ...`` and exits 0.
benchmarks/README.md ("GPU") says how to run it on a lent GPU machine (onnxruntime-gpu carried
as wheel parts, the exported models carried in ``.featx/models``).

Sections, all on EfficientNet-Lite0 (featx's export, 224 px) and its fp16 variant:

a. raw ONNX Runtime CUDA sessions, fp32 and fp16, at batch 64 and 256: ``session.run`` on host
   arrays (what a user writes) and IO-bound on an input already on the GPU (the model alone), img/s.
b. PyTorch eager (fp32) and AMP (autocast fp16) on the same GPU, same module as exported, same
   batches, input on the GPU, img/s. Goal: ORT fp16 >= PyTorch AMP.
c. ``featx.extraction.extract`` on pre-decoded uint8 arrays (224 x 224) into a cache vs the raw session on
   pre-made float32 host batches, per batch size (64, 128, 256): the overhead of featx's pipeline.
   Goal >= 0.9x.
d. ``featx.extraction.extract`` on photo JPEGs (1600 x 1067) and PNGs (384 x 256) vs the decode rate of all
   cores (featx's preparing routine alone, every core decoding). Goal >= 0.8x.
e. parity on real photos: CPU fp32 vs GPU fp32 (max |diff| <= 1e-3) and vs GPU fp16 (cosine >= 0.999).
f. GPU memory: this process's peak per section (NVML or nvidia-smi, sampled every 100 ms).

Every section runs on its own: one that fails is recorded in ``errors`` and the others go on;
the JSON is rewritten after each section, so a run cut short keeps what it measured. Sections
past ``--budget-s`` are skipped (recorded as such).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # featx from this checkout where it is not installed (a lent GPU machine)
sys.path.insert(0, str(HERE))

from decode_scaling import decode_rate  # noqa: E402
from throughput import environment, fmt, print_table, write_jpegs  # noqa: E402

MODEL = "efficientnet-lite0"


@dataclasses.dataclass
class Sizes:
    batches: tuple = (64, 256)  # raw sessions and PyTorch
    tensor_images: int = 4096  # images per timed round on pre-made batches
    rounds: int = 3
    arrays: int = 8192  # featx.extract on pre-decoded arrays
    sweep: tuple = (64, 128, 256)  # featx.extract batch sizes
    jpegs: int = 1024
    jpeg_side: int = 1600
    pngs: int = 2048
    png_side: int = 384
    parity_items: int = 64


SMOKE = Sizes(batches=(4, 8), tensor_images=16, rounds=1, arrays=24, sweep=(8, 16), jpegs=6, jpeg_side=320, pngs=6,
              png_side=96, parity_items=6)


class Run:
    """Rows, results and errors of one run; writes the JSON after every section."""

    def __init__(self, sizes: Sizes, device: str, out: Path, workdir: Path, budget_s: float, command: str):
        self.sizes, self.device, self.out, self.workdir = sizes, device, out, workdir
        self.budget_s, self.t0 = budget_s, time.perf_counter()
        self.rows: list[dict] = []
        self.results: dict = {}
        self.errors: dict[str, str] = {}
        self.skipped: list[str] = []
        self.memory = GpuMemory(device)
        self.record = {"benchmark": "featx on a GPU (issue 15)", "command": command,
                       "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "device": device, "sizes": dataclasses.asdict(sizes)}

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def row(self, section, what, value, baseline, unit, goal=None, note=""):
        ratio = value / baseline if value is not None and baseline else None
        verdict = None if goal is None or ratio is None else ("meets" if ratio >= goal else "misses")
        self.rows.append({"section": section, "what": what, "featx": value, "baseline": baseline, "unit": unit,
                          "ratio": ratio, "goal": goal, "verdict": verdict, "note": note})

    def section(self, name: str, fn, *args) -> None:
        if time.perf_counter() - self.t0 > self.budget_s:
            self.skipped.append(name)
            self.log(f"section {name} skipped: past the {self.budget_s:.0f} s budget")
            return
        self.log(f"section {name}")
        self.memory.start(name)
        try:
            fn(self, *args)
        except Exception as e:  # record and go on: one broken section must not hide the others
            self.errors[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            self.log(f"section {name} FAILED: {self.errors[name]}")
        finally:
            self.results.setdefault("gpu_memory_mib", {})[name] = self.memory.stop()
            self.write()

    def write(self) -> None:
        record = {**self.record, "seconds": time.perf_counter() - self.t0, "table": self.rows,
                  "results": self.results, "errors": self.errors, "skipped": self.skipped}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=_json_default))
        os.replace(tmp, self.out)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


# ------------------------------------------------------------------------------------ GPU memory
class GpuMemory:
    """This process's GPU memory, sampled every 100 ms in a thread: the peak per section (MiB)."""

    def __init__(self, device: str):
        self.enabled = device.startswith("cuda")
        self.index = int(device.partition(":")[2] or 0)
        self._read = self._reader() if self.enabled else None
        self._stop = threading.Event()
        self._thread = None
        self.peak = None

    def _reader(self):
        pid = os.getpid()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)

            def read():
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                used = [p.usedGpuMemory for p in procs if p.pid == pid and p.usedGpuMemory is not None]
                return sum(used) / 2 ** 20 if used else pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2 ** 20
            return read
        except Exception:  # no NVML bindings: nvidia-smi
            def read():
                out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
                return float(out.stdout.strip().splitlines()[0])
            return read

    def _sample(self):
        while not self._stop.wait(0.1):
            try:
                value = self._read()
            except Exception:
                return
            self.peak = value if self.peak is None else max(self.peak, value)

    def start(self, name: str) -> None:
        if not self.enabled:
            return
        self.peak = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name=f"gpu-memory-{name}", daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join(5)
        self._thread = None
        return self.peak


# ------------------------------------------------------------------------------------ helpers
def timed(fn, images: int, rounds: int, sync=lambda: None) -> dict:
    """Images/s of ``fn`` (one round = ``images`` images), after 3 warm-up calls: median and rounds."""
    for _ in range(3):
        fn(warmup=True)
    sync()
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn(warmup=False)
        sync()
        rates.append(images / (time.perf_counter() - t))
    return {"median": statistics.median(rates), "rounds": rates}


def providers_for(device: str):
    if device.startswith("cuda"):
        return [("CUDAExecutionProvider", {"device_id": device.partition(":")[2] or "0"}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def real_batch(bb, batch: int) -> np.ndarray:
    """A float32 (batch, 3, 224, 224) batch of real photos (sklearn's two, cropped and flipped), as featx prepares them."""
    from featx.specs.samples import sample_photos

    photos = sample_photos()
    rgbs = []
    for i in range(batch):
        p = photos[i % 2]
        h, w, _ = p.shape
        crop = p[(i * 7) % (h // 3):, (i * 11) % (w // 3):]
        rgbs.append(np.ascontiguousarray(crop[:, ::-1] if i % 4 == 1 else crop))
    return bb.prepare(rgbs)["pixel_values"]


def model_files(device: str):
    """(fp32 backbone, fp16 backbone) on ``device``: exported or found in $FEATX_HOME/models."""
    import featx

    fp32 = featx.load_backbone(MODEL, providers=device)
    fp16 = featx.load_backbone(MODEL, providers=device, precision="fp16")
    return fp32, fp16


# ------------------------------------------------------------------------------------ sections
def section_raw(run: Run, models) -> None:
    """a. raw ORT sessions, host arrays and device-resident input, fp32 and fp16."""
    import onnxruntime as ort

    s = run.sizes
    kind, _, index = run.device.partition(":")
    out = {}
    for precision, bb in zip(("fp32", "fp16"), models):
        session = ort.InferenceSession(str(bb.onnx_path), providers=providers_for(run.device))
        name = session.get_inputs()[0].name
        for batch in s.batches:
            x = real_batch(bb, batch)
            calls = max(1, s.tensor_images // batch)

            def host(warmup, session=session, x=x, calls=calls):
                for _ in range(1 if warmup else calls):
                    session.run(None, {name: x})

            value = ort.OrtValue.ortvalue_from_numpy(x, kind, int(index or 0))
            binding = session.io_binding()
            binding.bind_ortvalue_input(name, value)
            binding.bind_output(session.get_outputs()[0].name, kind, int(index or 0))

            def resident(warmup, session=session, binding=binding, calls=calls):
                for _ in range(1 if warmup else calls):
                    session.run_with_iobinding(binding)
                binding.synchronize_outputs()

            out[f"{precision}_b{batch}"] = {"host": timed(host, calls * batch, s.rounds),
                                            "resident": timed(resident, calls * batch, s.rounds)}
            run.log(f"  ORT {precision} batch {batch}: host {out[f'{precision}_b{batch}']['host']['median']:.0f}, "
                    f"resident {out[f'{precision}_b{batch}']['resident']['median']:.0f} img/s")
            row_name = f"ORT {precision} batch {batch}: host arrays vs input on the device"
            run.row("a", row_name, out[f"{precision}_b{batch}"]["host"]["median"],
                    out[f"{precision}_b{batch}"]["resident"]["median"], "img/s")
        del session
    run.results["raw_ort"] = out


def section_torch(run: Run, models) -> None:
    """b. PyTorch eager fp32 and AMP fp16 on the same module, input on the device."""
    import torch

    from featx.torchmodels.export import build_torch_backbone

    s = run.sizes
    on_gpu = run.device.startswith("cuda")
    device = torch.device(run.device if on_gpu else "cpu")
    torch.backends.cudnn.benchmark = True
    module = build_torch_backbone(models[0].spec)[0].to(device).eval()
    amp_dtype = torch.float16 if on_gpu else torch.bfloat16
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    out = {}
    raw = run.results.get("raw_ort", {})
    for batch in s.batches:
        x = torch.from_numpy(real_batch(models[0], batch)).to(device)
        calls = max(1, s.tensor_images // batch)

        def eager(warmup, x=x, calls=calls):
            with torch.inference_mode():
                for _ in range(1 if warmup else calls):
                    module(x)

        def amp(warmup, x=x, calls=calls):
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype):
                for _ in range(1 if warmup else calls):
                    module(x)

        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        out[f"b{batch}"] = {"eager_fp32": timed(eager, calls * batch, s.rounds, sync),
                            "amp": timed(amp, calls * batch, s.rounds, sync),
                            "amp_dtype": str(amp_dtype).replace("torch.", ""),
                            "max_memory_allocated_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20
                            if on_gpu else None}
        e, a = out[f"b{batch}"]["eager_fp32"]["median"], out[f"b{batch}"]["amp"]["median"]
        run.log(f"  PyTorch batch {batch}: eager {e:.0f}, AMP {a:.0f} img/s")
        ort32 = raw.get(f"fp32_b{batch}", {}).get("resident", {}).get("median")
        ort16 = raw.get(f"fp16_b{batch}", {}).get("resident", {}).get("median")
        run.row("b", f"ORT fp32 vs PyTorch eager fp32, batch {batch} (input on the device)", ort32, e, "img/s")
        run.row("b", f"ORT fp16 vs PyTorch AMP, batch {batch} (input on the device)", ort16, a, "img/s", goal=1.0)
    run.results["torch"] = out


def arrays_dataset(n: int, side: int = 224):
    """``n`` pre-decoded uint8 (side, side, 3) images (64 distinct real crops, repeated), as a featx Dataset."""
    from PIL import Image

    from featx.specs.samples import sample_photos
    from featx.sources import Item, make_dataset

    photos = sample_photos()
    distinct = []
    for i in range(64):
        p = photos[i % 2]
        h, w, _ = p.shape
        y, x = (i * 13) % (h - side), (i * 29) % (w - side)
        crop = p[y:y + side * 2, x:x + side * 2]
        distinct.append(np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((side, side))))
    items = [Item(id=f"a{i:06d}", ref=distinct[i % 64], label=None) for i in range(n)]
    return make_dataset("pre-decoded arrays", "image", items)


def section_extract_arrays(run: Run, models) -> None:
    """c. featx.extract on pre-decoded arrays vs the raw session on pre-made host batches, per batch size."""
    import onnxruntime as ort

    import featx

    s = run.sizes
    bb = models[0]
    data = arrays_dataset(s.arrays)
    session = ort.InferenceSession(str(bb.onnx_path), providers=providers_for(run.device))
    name = session.get_inputs()[0].name
    out = {}
    for batch in s.sweep:
        x = real_batch(bb, batch)
        calls = max(1, s.arrays // batch)

        def raw(warmup, x=x, calls=calls):
            for _ in range(1 if warmup else calls):
                session.run(None, {name: x})

        raw_rate = timed(raw, calls * batch, s.rounds)
        rates = []
        for r in range(s.rounds + 1):  # round 0 warms up (cuDNN algorithms for this batch size)
            cache = run.workdir / f"arrays-{batch}-{r}"
            report = featx.extract(data, bb, cache, batch_size=batch, progress=False, durable=False)
            assert report.embedded == s.arrays, report.summary()
            if r:
                rates.append(report.items_per_s)
            shutil.rmtree(cache)
        out[f"b{batch}"] = {"extract": {"median": statistics.median(rates), "rounds": rates}, "raw": raw_rate}
        run.log(f"  batch {batch}: extract {statistics.median(rates):.0f}, raw session {raw_rate['median']:.0f} img/s")
        run.row("c", f"featx.extract on pre-decoded arrays vs raw session (host batches), batch {batch}",
                statistics.median(rates), raw_rate["median"], "img/s", goal=0.9)
    best = max(out, key=lambda k: out[k]["extract"]["median"])
    out["best_batch"] = int(best[1:])
    out["staging"] = {"device_buffers": bb.session.staging.allocated, "host_buffers": bb.session.staging.hosts,
                      "page_locked": bb.session.staging.pinned} if bb.session.uses_io_binding else None
    out["decode_workers"] = _default_workers(bb)
    run.results["extract_arrays"] = out


def _default_workers(bb) -> int:
    return bb.defaults.decode_workers


def write_pngs(folder: Path, n: int, side: int) -> Path:
    """``n`` RGB PNGs of ``side`` x ``side * 2 // 3`` cut from the photo JPEGs' source photos."""
    from PIL import Image

    from featx.specs.samples import sample_photos

    photos = sample_photos()
    folder.mkdir(parents=True, exist_ok=True)

    def one(i):
        p = photos[i % 2]
        h, w, _ = p.shape
        y, x = (i * 17) % (h // 2), (i * 31) % (w // 2)
        Image.fromarray(np.ascontiguousarray(p[y:y + h // 2, x:x + w // 2])).resize(
            (side, side * 2 // 3)).save(folder / f"crop_{i:05d}.png")

    with cf.ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, range(n)))
    return folder


def section_extract_files(run: Run, models) -> None:
    """d. featx.extract on JPEG and PNG files vs the decode rate of all cores."""
    import featx
    from featx.engine.runtime import default_threads

    s = run.sizes
    bb = models[0]
    cores = default_threads()
    cpu = featx.load_backbone(bb.onnx_path, providers="cpu", threads=1)  # decoding only: its session never runs
    batch = run.results.get("extract_arrays", {}).get("best_batch") or bb.default_batch_size
    out = {"cores": cores, "batch": batch}
    folders = {"jpeg": write_jpegs(run.workdir / "jpegs", s.jpegs, s.jpeg_side),
               "png": write_pngs(run.workdir / "pngs", s.pngs, s.png_side)}
    for kind, folder in folders.items():
        files = sorted(str(p) for p in folder.iterdir())
        decode_rate(cpu, files, batch, cores)  # warm-up: the page cache
        one = decode_rate(cpu, files[:128], batch, 1)
        all_cores = [decode_rate(cpu, files, batch, cores) for _ in range(s.rounds)]
        rates = []
        for r in range(s.rounds + 1):
            cache = run.workdir / f"{kind}-{r}"
            report = featx.extract(folder, bb, cache, batch_size=batch, progress=False, durable=False)
            assert report.embedded == len(files), report.summary()
            if r:
                rates.append(report.items_per_s)
            shutil.rmtree(cache)
        out[kind] = {"files": len(files), "decode_one_core": one, "decode_all_cores": all_cores,
                     "extract": rates}
        d, e = statistics.median(all_cores), statistics.median(rates)
        run.log(f"  {kind}: decode {one:.0f} img/s on 1 core, {d:.0f} on {cores}; extract {e:.0f} img/s")
        run.row("d", f"featx.extract on {kind.upper()} files vs decode rate of all {cores} cores", e, d, "img/s",
                goal=0.8, note=f"decoding scales {d / one:.1f}x on {cores} cores")
    run.results["extract_files"] = out


def section_parity(run: Run, models) -> None:
    """e. CPU fp32 vs the device's fp32 and fp16 features on real photos."""
    import featx
    from featx.torchmodels.quantize import cosine_rows
    from featx.specs.samples import sample_photos

    photos = sample_photos()
    items = [np.ascontiguousarray(photos[i % 2][(i * 5) % 97:, (i * 9) % 131:]) for i in range(run.sizes.parity_items)]
    cpu = featx.load_backbone(models[0].onnx_path, providers="cpu").embed(items, batch_size=16)
    gpu32 = models[0].embed(items, batch_size=16)
    gpu16 = models[1].embed(items, batch_size=16)
    diff = float(np.abs(gpu32 - cpu).max())
    cos16 = cosine_rows(gpu16, cpu)
    run.results["parity"] = {"items": len(items), "fp32_max_abs_diff": diff,
                             "fp32_cosine_min": float(cosine_rows(gpu32, cpu).min()),
                             "fp16_cosine_min": float(cos16.min()), "fp16_cosine_mean": float(cos16.mean()),
                             "fp16_max_abs_diff": float(np.abs(gpu16 - cpu).max())}
    run.log(f"  fp32 max |GPU - CPU| {diff:.2e}; fp16 cosine to CPU fp32 min {cos16.min():.5f}")
    run.row("e", "fp32 features, max |device - CPU|", diff, None, "abs",
            note=f"{diff:.2e}, goal <= 1e-3: " + ("meets" if diff <= 1e-3 else "misses"))
    run.row("e", "fp16 features, min cosine to CPU fp32", float(cos16.min()), None, "cosine",
            note=f"{cos16.min():.5f}, goal >= 0.999: " + ("meets" if cos16.min() >= 0.999 else "misses"))


# ------------------------------------------------------------------------------------ main
def markdown(rows) -> str:
    lines = ["| sec | measure | featx | baseline | unit | ratio | goal | verdict |", "|---|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['section']} | {r['what']} | {fmt(r['featx'])} | {fmt(r['baseline'])} | {r['unit']} | "
                     + ("-" if r["ratio"] is None else f"{r['ratio']:.2f}x") + " | "
                     + ("-" if r["goal"] is None else f">= {r['goal']:g}x") + " | "
                     + ((r["verdict"] or "") + (f" {r['note']}" if r["note"] else "")).strip() + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, on the CPU when no GPU is usable (checks the script; writes gpu.smoke.json)")
    p.add_argument("--device", default="cuda:0", help="the GPU to measure (default cuda:0)")
    p.add_argument("--sections", default="raw,torch,arrays,files,parity",
                   help="comma-separated subset of raw,torch,arrays,files,parity (default: all)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the sections that would start after this many seconds (default 420)")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default results/gpu.json, --smoke: gpu.smoke.json)")
    args = p.parse_args(argv)

    from featx.engine.runtime import cuda_status

    usable, why = cuda_status()
    device = args.device
    if not usable:
        if not args.smoke:
            print(f"no GPU: {why}. Nothing measured; run this on a GPU machine (benchmarks/README.md, \"GPU\"), "
                  "or `--smoke` to try every section on the CPU.")
            return 0
        device = "cpu"
    if device.startswith("cuda"):
        import torch  # noqa: F401  -- loads CUDA and cuDNN libraries that onnxruntime-gpu then finds

    out = args.out or HERE / "results" / ("gpu.smoke.json" if args.smoke else "gpu.json")
    workdir = Path(tempfile.mkdtemp(prefix="featx-gpu-"))
    command = "python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run = Run(SMOKE if args.smoke else Sizes(), device, out, workdir, args.budget_s, command)
    run.record["environment"] = environment(os.cpu_count() or 1)
    run.record["environment"]["gpu_name"] = _gpu_name()
    run.log(f"device {device} ({run.record['environment']['gpu_name'] or 'no GPU'}); workdir {workdir}")
    chosen = [x.strip() for x in args.sections.split(",") if x.strip()]
    steps = {"raw": section_raw, "torch": section_torch, "arrays": section_extract_arrays,
             "files": section_extract_files, "parity": section_parity}
    unknown = set(chosen) - set(steps)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(steps)}")
    try:
        models = model_files(device)
        if not device.startswith("cuda"):  # --smoke on the CPU: the bound (GPU) code path all the same
            for bb in models:
                bb.session.io_binding = True
        run.record["models"] = {bb.name: str(bb.onnx_path.name) for bb in models}
        for name in chosen:
            run.section(name, steps[name], models)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        run.write()
    print_table(run.rows)
    if not args.smoke:
        (out.with_suffix(".md")).write_text(markdown(run.rows))
    print(f"\nwrote {out} in {time.perf_counter() - run.t0:.0f} s" + (f"; errors: {run.errors}" if run.errors else ""))
    return 1 if run.errors else 0


def _gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
