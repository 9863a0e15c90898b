"""Memory bounds, measured on real subprocesses: sizes are checked before the work, decoded pixels
are bounded per batch and in flight, and ``decode_image(max_pixels=)`` really raises the limit.

Each measured run happens in a fresh child process that loads its model and warms it up, resets
its peak-RSS mark (``/proc/self/clear_refs``), does the work, and reports ``VmHWM`` (peak RSS)
minus the RSS at the reset: the memory the work itself took. Input files are written by another
child, so their making leaves nothing in the measured process's heap.

Measured when these tests were written (2 cores): six 3000 x 3000 PNGs in one batch, one decoding
thread: 252 MB before (the batch held every decoded image), 72 MB after; six threads sharing a
one-image pixel budget: 73 MB, against 389 MB without the budget. One 5.2M-character text among
three short ones: tokenized whole for sorting before the length check refused it (~700 MB), now
refused for ~10 MB. The issue's six 13000 x 13000 PNGs (531 KB files) in one batch, six decoding
threads: 4679 MB before (two preparing threads, each holding its batch's decoded images), 1305 MB
after (the default budget lets one such image decode at a time). Six texts of 990,000 characters in one batch: 580 MB before (tokenized at
once), ~195 MB after (a million characters at a time).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx.engine.decode import decode_image
from featx.errors import InputError

MB = 1 << 20

PROBE = """
import json
def _vm(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
{setup}
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
_base = _vm("VmRSS:")
{work}
print(json.dumps({{"growth": _vm("VmHWM:") - _base, "result": result}}))
"""


def _can_measure() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _can_measure(), reason="peak RSS cannot be reset here (/proc/self/clear_refs)")


def measure(setup: str, work: str, timeout: int = 600) -> tuple[int, object]:
    """Run ``setup`` then ``work`` (which sets ``result``) in a child; (peak RSS growth in bytes of the work, result)."""
    code = PROBE.format(setup=textwrap.dedent(setup), work=textwrap.dedent(work))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["growth"], out["result"]


def write_pngs(folder: Path, n: int, side: int) -> list[str]:
    """``n`` RGB PNGs of ``side`` x ``side`` (gradients, each shifted), written by a child process."""
    code = f"""
import numpy as np
from PIL import Image
side = {side}
ramp = (np.arange(side) * 255 // side).astype(np.uint8)
for i in range({n}):
    img = Image.new("RGB", (side, side), (40 * i % 256, 90, 160))
    img.paste(Image.fromarray(np.tile(np.roll(ramp, 7 * i), (64, 1))).convert("RGB"), (0, 0))
    img.save({str(folder)!r} + f"/big_{{i}}.png")
"""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
    return sorted(str(p) for p in folder.glob("big_*.png"))


def image_setup(model) -> str:
    return f"""
import numpy as np, featx
from featx.engine.decode import PixelBudget
from featx.engine.embedding import prepare_batches
bb = featx.load_backbone({str(model)!r}, providers="cpu", threads=1)
bb.embed([np.zeros((40, 40, 3), np.uint8)] * 2, decode_workers=2)  # session, threads, arenas warmed up
"""


# --------------------------------------------------------------------------- images
@pytest.fixture(scope="module")
def six_pngs(tmp_path_factory) -> list[str]:
    """Six 3000 x 3000 RGB PNGs (~35 KB each on disk, 27 MB each decoded as uint8)."""
    return write_pngs(tmp_path_factory.mktemp("big-png"), 6, 3000)


IMAGE_MB = 3000 * 3000 * 3 / MB  # one decoded image as a uint8 array: 25.7 MiB


def test_a_batch_of_large_images_holds_one_decoded_image_at_a_time(tiny_image_onnx, six_pngs, tmp_path):
    """One decoding thread, the six in one batch: each image is cropped as it is decoded."""
    growth, result = measure(image_setup(tiny_image_onnx), f"""
report = featx.extract({str(Path(six_pngs[0]).parent)!r}, bb, {str(tmp_path / "c")!r}, batch_size=6,
                       decode_workers=1, progress=False)
result = report.embedded
""")
    assert result == 6
    assert growth < 4 * IMAGE_MB * MB, f"{growth / MB:.0f} MB for a batch of six 3000 x 3000 images"


def test_decoding_threads_share_a_pixel_budget(tiny_image_onnx, six_pngs):
    """Six threads, six images, a budget of one image: one is decoded at a time, and memory shows it."""
    setup = image_setup(tiny_image_onnx) + f"\nfiles = {six_pngs!r}\n"
    work = """
budget = PixelBudget({pixels})
batches = list(prepare_batches(bb, [(files, [str(i) for i in range(6)])], workers=6, budget=budget))
result = [budget.peak, len(batches[0].positions)]
"""
    bounded, (peak, n) = measure(setup, work.format(pixels=3000 * 3000))
    assert n == 6 and peak == 3000 * 3000
    assert bounded < 4 * IMAGE_MB * MB, f"{bounded / MB:.0f} MB with a one-image budget"
    # The same six threads with room for all six images: the bound above is the budget's doing.
    unbounded, (peak, n) = measure(setup, work.format(pixels=10 ** 12))
    assert n == 6 and peak > 3000 * 3000
    assert unbounded > bounded + IMAGE_MB * MB


@pytest.mark.slow
def test_six_huge_pngs_in_one_batch_stay_under_2_gb(tiny_image_onnx, tmp_path):
    """The issue's case: six small PNGs of 13000 x 13000 pixels (4.4 GB in one batch before)."""
    files = write_pngs(tmp_path / "huge", 6, 13000)
    assert max(Path(f).stat().st_size for f in files) < 2 * MB  # tiny files, huge images
    growth, result = measure(image_setup(tiny_image_onnx), f"""
report = featx.extract({str(tmp_path / "huge")!r}, bb, {str(tmp_path / "c")!r}, batch_size=6, decode_workers=6,
                       progress=False)
result = report.embedded
""")
    assert result == 6
    assert growth < 2 * 1024 * MB, f"{growth / MB:.0f} MB for six 13000 x 13000 PNGs"


# --------------------------------------------------------------------------- texts
def text_setup(model) -> str:
    return f"""
import featx
bb = featx.load_backbone({str(model)!r}, providers="cpu", threads=1)
bb.embed(["warm up the tokenizer", "and the session"])
"""


def test_a_huge_text_is_refused_before_it_is_tokenized(tiny_text_onnx, tmp_path):
    words = "the quick brown fox jumps over the lazy dog while reading fine food reviews "
    huge = words * (5_200_000 // len(words))
    data = tmp_path / "texts.txt"
    data.write_text("a short review\n" + huge + "\nanother one\nand a third\n")
    growth, result = measure(text_setup(tiny_text_onnx), f"""
report = featx.extract({str(data)!r}, bb, {str(tmp_path / "c")!r}, on_error="skip", progress=False)
result = [report.embedded, list(report.failed.values())]
""")
    embedded, reasons = result
    assert embedded == 3 and len(reasons) == 1 and "over the limit of 1,000,000" in reasons[0]
    assert growth < 100 * MB, f"{growth / MB:.0f} MB to refuse one {len(huge):,}-character text"


def test_long_legal_texts_are_tokenized_a_few_at_a_time(tiny_text_onnx):
    """Six texts just under the limit in one batch: tokenized one at a time (~160 MB each), not all at once."""
    growth, result = measure(text_setup(tiny_text_onnx), """
words = "the quick brown fox jumps over the lazy dog while reading fine food reviews "
texts = [str(i) + " " + words * (990_000 // len(words)) for i in range(6)]
feeds = bb.prepare([bb.decode(t) for t in texts])
result = int(feeds["input_ids"].shape[1])
""")
    assert result == 32  # truncated at the spec's max_length
    assert growth < 300 * MB, f"{growth / MB:.0f} MB to tokenize six 1M-character texts"


# --------------------------------------------------------------------------- the limit itself
def test_max_pixels_admits_images_over_pillows_own_limit(monkeypatch, tmp_path):
    """Pillow refuses twice ``Image.MAX_IMAGE_PIXELS`` on its own; featx's ``max_pixels`` decides instead."""
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100), (10, 200, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's hard limit is now 2000 pixels
    rgb = decode_image(str(path))  # featx's default limit, far above
    assert rgb.shape == (100, 100, 3) and (rgb == (10, 200, 30)).all()
    assert decode_image(path.read_bytes(), max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(InputError, match=r"100x100 = 10,000 pixels, over the limit of 9,999"):
        decode_image(str(path), max_pixels=9_999)
    assert Image.MAX_IMAGE_PIXELS == 1000  # featx changed no process-wide setting


@pytest.mark.slow
def test_a_photo_over_pillows_default_limit_decodes_with_featx_default(tmp_path):
    """14000 x 14000 = 196M pixels: over Pillow's 179M refusal, under featx's 268M default."""
    [path] = write_pngs(tmp_path / "one", 1, 14000)
    assert 14000 * 14000 > 2 * Image.MAX_IMAGE_PIXELS
    crop = decode_image(path, reduce=lambda rgb: np.asarray(rgb.resize((16, 16))))
    assert crop.shape == (16, 16, 3)
    with pytest.raises(InputError, match=r"14000x14000 = 196,000,000 pixels, over the limit of 100,000,000"):
        decode_image(path, max_pixels=100_000_000)
