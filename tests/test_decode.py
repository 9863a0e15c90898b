"""featx.decode: the bad-input policy and colour handling, on real files written with Pillow."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import featx
from featx.engine.decode import MAX_PIXELS, check_text, decode_image, describe
from featx.errors import FeatxError, InputError
from featx.engine.preprocess import TextTokenizer
from featx.specs.spec import ImagePreprocess

PIL_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
PIL_LOAD_TRUNCATED = ImageFile.LOAD_TRUNCATED_IMAGES


@pytest.fixture(autouse=True)
def pillow_globals_untouched():
    """featx never flips Pillow's process-wide settings, whatever it was fed."""
    yield
    assert Image.MAX_IMAGE_PIXELS == PIL_MAX_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is PIL_LOAD_TRUNCATED


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(sample_rgbs, w=96, h=64) -> Image.Image:
    return Image.fromarray(sample_rgbs[0]).resize((w, h))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A syntactically valid PNG whose IHDR declares width x height (8-bit RGB), with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# --------------------------------------------------------------------------- bad files
def test_random_bytes_named_jpg(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not a readable image") as e:
        decode_image(path)
    assert str(path) in str(e.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(InputError, match=r"empty file \(0 bytes\)") as e:
        decode_image(path)
    assert str(path) in str(e.value)
    with pytest.raises(InputError, match="empty"):
        decode_image(b"", item_id="blob-7")


def test_directory(tmp_path):
    folder = tmp_path / "a_folder.jpg"
    folder.mkdir()
    with pytest.raises(InputError, match="is a directory") as e:
        decode_image(folder)
    assert str(folder) in str(e.value)


def test_missing_path(tmp_path):
    path = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(InputError, match="no such file") as e:
        decode_image(str(path))
    assert str(path) in str(e.value)
    assert isinstance(e.value, FeatxError) and isinstance(e.value, ValueError)


def test_empty_string_path():
    with pytest.raises(InputError, match="empty string"):
        decode_image("")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod 000 file")
def test_unreadable_file(tmp_path, sample_rgbs):
    path = tmp_path / "secret.png"
    photo(sample_rgbs).save(path)
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            decode_image(path)
    finally:
        path.chmod(0o644)


def test_unreadable_file_in_a_child_that_obeys_file_modes(tmp_path, sample_rgbs, obeying_file_modes):
    """The same, where this test runs as root: a child without root's file capabilities decodes it."""
    import subprocess
    import sys

    path = tmp_path / "secret.png"
    photo(sample_rgbs).save(path)
    path.chmod(0)
    code = ("from featx.engine.decode import decode_image\n"
            "from featx.errors import UnreadableItemError\n"
            "try:\n"
            f"    decode_image({str(path)!r})\n"
            "except UnreadableItemError as e:\n"
            "    print('refused:', e)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              preexec_fn=obeying_file_modes)
    finally:
        path.chmod(0o644)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith("refused: image") and "cannot be read (permission denied)" in done.stdout
    assert decode_image(path).shape == (64, 96, 3)  # readable again: nothing about the file was remembered


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_file(tmp_path, sample_rgbs, fmt, suffix):
    data = encode(photo(sample_rgbs, 320, 214), fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated") as e:
        decode_image(path)
    assert str(path) in str(e.value)
    # the same bytes, named by an id
    with pytest.raises(InputError, match="'item-42'"):
        decode_image(data[: len(data) // 2], item_id="item-42")
    # the untruncated file is fine
    assert decode_image(data).shape == (214, 320, 3)


def pixels_never_decoded(monkeypatch):
    """Make Pillow's pixel decoding fail loudly: a check that must happen before decoding cannot pass by being
    fast on a fast machine."""
    def load(self):
        raise AssertionError("Pillow was asked to decode the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_png_bomb_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(100_000, 100_000))
    assert path.stat().st_size < 200
    pixels_never_decoded(monkeypatch)
    with pytest.raises(InputError, match="too many pixels|decompression bomb") as e:
        decode_image(path)
    assert str(path) in str(e.value)


def test_png_bomb_refused_even_without_pillows_guard(tmp_path, monkeypatch):
    """featx checks the header itself: a caller who disabled Pillow's guard is still protected."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(100_000, 100_000))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    pixels_never_decoded(monkeypatch)
    with pytest.raises(InputError, match=r"100000x100000 = 10,000,000,000 pixels, over the limit"):
        decode_image(path)
    monkeypatch.undo()


def test_max_pixels_per_call(sample_rgbs):
    data = encode(photo(sample_rgbs, 64, 48), "PNG")
    with pytest.raises(InputError, match="over the limit of 1,000"):
        decode_image(data, max_pixels=1000)
    assert decode_image(data, max_pixels=64 * 48).shape == (48, 64, 3)
    assert MAX_PIXELS == 16384 * 16384


def test_unsupported_types():
    with pytest.raises(InputError, match="unsupported input type int"):
        decode_image(12)
    with pytest.raises(InputError, match="unsupported dtype int32"):
        decode_image(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(InputError, match=r"float images must hold values in \[0, 1\]"):
        decode_image(np.full((4, 4, 3), 2.0, np.float32))
    with pytest.raises(InputError, match="NaN or infinite"):
        decode_image(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(InputError, match="Channels-first"):
        decode_image(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"got \(0, 5, 3\)"):
        decode_image(np.zeros((0, 5, 3), np.uint8))


def test_describe():
    assert describe("a.jpg") == "'a.jpg'"
    assert describe(b"x", item_id=7) == "'7'"
    assert describe(np.zeros((2, 3), np.uint8)) == "<array uint8 (2, 3)>"


# --------------------------------------------------------------------------- bad input through embed()
def test_embed_names_the_bad_item(tiny_image_onnx, image_files, tmp_path):
    bb = featx.load_backbone(tiny_image_onnx)
    good = sorted(image_files.rglob("*.png"))[0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match="'broken-one'"):
        bb.embed([good, bad], ids=["fine", "broken-one"])
    with pytest.raises(InputError) as e:
        bb.embed([good, bad])
    assert "'#1'" in str(e.value)


def test_embed_refuses_float64_and_nhwc_arrays(tiny_image_onnx):
    bb = featx.load_backbone(tiny_image_onnx)
    x = np.zeros((2, 3, 32, 32), np.float64)
    with pytest.raises(InputError, match="must be float32 NCHW.*got float64"):
        bb.embed(x)
    with pytest.raises(InputError, match="NHWC"):
        bb.embed(np.zeros((2, 32, 32, 3), np.float32))
    assert bb.embed(x.astype(np.float32)).shape == (2, 8)


# --------------------------------------------------------------------------- texts
@pytest.mark.parametrize("bad,why", [("", "empty or blank"), ("   \n\t", "empty or blank"), ("\x00\x00 ", "empty or blank"),
                                     (None, "missing"), (3.5, "must be a str, got float"),
                                     (float("nan"), "missing"), (b"bytes", "must be a str, got bytes")])
def test_bad_texts(bad, why):
    with pytest.raises(InputError, match=why) as e:
        check_text(bad, item_id="row-3")
    assert "'row-3'" in str(e.value)


def test_text_ok_cases():
    assert check_text("a\x00b") == "a b"
    assert check_text("  hello ") == "  hello "
    assert check_text("🙂🚀 émoji ok") == "🙂🚀 émoji ok"
    with pytest.raises(InputError, match="over the limit of 10"):
        check_text("x" * 11, max_chars=10)


def test_bad_texts_through_embed(tiny_text_onnx):
    bb = featx.load_backbone(tiny_text_onnx)
    for bad in ("", "   ", None, 3.5):
        with pytest.raises(InputError, match="'b'"):
            bb.embed(["fine", bad], ids=["a", "b"])
    with pytest.raises(InputError, match="wrap a single item"):
        bb.embed("a single string")


def test_odd_texts_embed(tiny_text_onnx, minilm_tokenizer_json):
    bb = featx.load_backbone(tiny_text_onnx)
    long_text = "word " * 40_000  # 200k characters
    texts = ["nul\x00inside", long_text, "🙂🚀🎉", "\x00x"]
    X = bb.embed(texts)
    assert X.shape == (4, 16) and X.dtype == np.float32 and np.isfinite(X).all()
    batch = TextTokenizer(minilm_tokenizer_json, 32).encode([check_text(t) for t in texts])
    assert batch.n_truncated == 1
    assert batch.input_ids.shape[1] == 32
    # the NUL character is treated like a space
    np.testing.assert_array_equal(bb.embed(["nul\x00inside"]), bb.embed(["nul inside"]))
    # emoji map to [UNK], not to nothing
    unk = TextTokenizer(minilm_tokenizer_json, 32)._tok.token_to_id("[UNK]")
    assert unk in batch.input_ids[2]


# --------------------------------------------------------------------------- modes
def test_mode_1():
    img = Image.new("1", (8, 4), 0)
    img.putpixel((1, 1), 1)
    out = decode_image(encode(img, "PNG"))
    assert out.shape == (4, 8, 3) and out.dtype == np.uint8
    assert out[1, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_mode_L(sample_rgbs):
    grey = photo(sample_rgbs).convert("L")
    out = decode_image(encode(grey, "PNG"))
    np.testing.assert_array_equal(out[:, :, 0], np.asarray(grey))
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])


def test_mode_LA_composites_on_white():
    la = np.zeros((4, 4, 2), np.uint8)
    la[:, :, 0] = 40
    la[:2, :, 1] = 255  # top opaque, bottom transparent
    img = Image.fromarray(la, "LA")
    out = decode_image(encode(img, "PNG"))
    assert (out[:2] == 40).all() and (out[2:] == 255).all()


def test_mode_P(sample_rgbs):
    pal = photo(sample_rgbs).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = decode_image(encode(pal, "PNG"))
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 16


def test_mode_P_with_transparency():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([200, 0, 0, 0, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)  # index 1 (black) is transparent
    data = encode(img, "PNG", transparency=1)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 1
    out = decode_image(data)
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent -> white background, not black
    assert out[1, 1].tolist() == [200, 0, 0]


def test_mode_RGBA_composites_on_white():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[0, :, 3] = 255  # opaque red
    rgba[1, :, 3] = 0  # fully transparent (red underneath must not leak)
    rgba[1, 2, 3] = 128
    out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 0].tolist() == [255, 255, 255]
    assert out[1, 2, 0] == 255 and 120 <= out[1, 2, 1] <= 135  # half red on white
    # arrays with 4 channels follow the same rule
    np.testing.assert_array_equal(decode_image(rgba), out)


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_mode_CMYK(fmt):
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.shape == (8, 8, 3)
    assert np.abs(out[4, 4].astype(int) - [255, 0, 0]).max() <= 3


def test_mode_I16_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = decode_image(data)[0, :, 0].astype(int)
    assert out.min() == 0 and out.max() == 255
    assert len(np.unique(out)) == 256  # clipping would leave almost everything at 255
    np.testing.assert_array_equal(out, np.round(ramp[0] / 65535 * 255))
    # the same holds for a uint16 array
    np.testing.assert_array_equal(decode_image(ramp)[0, :, 0], out)


def test_mode_F():
    ramp = np.tile(np.linspace(0, 1, 51, dtype=np.float32), (3, 1))
    data = encode(Image.fromarray(ramp, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    out = decode_image(data)[0, :, 0].astype(int)
    np.testing.assert_array_equal(out, np.round(ramp[0] * 255))
    # 0..255 floats are taken as 8-bit values
    out255 = decode_image(Image.fromarray(ramp * 255, "F"))[0, :, 0].astype(int)
    np.testing.assert_array_equal(out255, out)
    bad = np.array([[0.5, np.inf]], np.float32)
    with pytest.raises(InputError, match="mode F"):
        decode_image(Image.fromarray(bad, "F"))


def test_exif_orientation_6_rotates(tmp_path):
    """Orientation 6 = the camera was turned; the stored 60x20 image is shown as 20x60."""
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)  # left half red
    arr[:, 30:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    out = decode_image(path)
    assert out.shape == (60, 20, 3)  # rotated, not just decoded
    # 90 degrees clockwise: the stored left (red) ends up on top
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60
    assert out[55, 10, 2] > 200 and out[55, 10, 0] < 60


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 6), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 3
    out = decode_image(path)
    assert out.shape == (6, 10, 3)
    assert out[3, 5].tolist() == [255, 0, 0]


@pytest.mark.parametrize("shape", [(1, 1), (1, 5000), (5000, 1)])
def test_tiny_and_extreme_images_reach_model_size(shape, tmp_path, monkeypatch, image_batch):
    path = tmp_path / "odd.png"
    arr = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    rgb = decode_image(path)
    assert rgb.shape == shape + (3,)
    sizes = []  # every image Pillow resizes to: a 1x5000 strip must not become a 256 x 1.28M image
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize",
                        lambda self, size, *a, **k: sizes.append(size) or resize(self, size, *a, **k))
    for cfg in (ImagePreprocess(size=32, resize=36, mean=(0.5,) * 3, std=(0.5,) * 3), ImagePreprocess()):
        x = image_batch([rgb], cfg)[0]
        assert x.shape == (3, cfg.size, cfg.size) and x.dtype == np.float32 and np.isfinite(x).all()
    assert all(w * h <= 256 * 256 for w, h in sizes)


def test_pil_image_and_path_agree(sample_rgbs, tmp_path):
    img = photo(sample_rgbs)
    path = tmp_path / "p.png"
    img.save(path)
    a = decode_image(path)
    np.testing.assert_array_equal(a, decode_image(img))
    np.testing.assert_array_equal(a, decode_image(path.read_bytes()))
    np.testing.assert_array_equal(a, decode_image(str(path)))
    np.testing.assert_array_equal(a, np.asarray(img))
    assert a.flags["C_CONTIGUOUS"]


def test_pillow_globals_after_everything():
    """(Checked after every test by the autouse fixture too.)"""
    assert Image.MAX_IMAGE_PIXELS == PIL_MAX_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
