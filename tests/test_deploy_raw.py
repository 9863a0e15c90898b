"""featx.deploy.raw: the in-graph preprocessing of the raw-input variant against featx's own (Pillow)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from featx.engine.decode import decode_image
from featx.errors import DeployError
from featx.specs.spec import ImagePreprocess

pytest.importorskip("onnxruntime_extensions")

from featx.deploy.raw import FILTERS, preprocessing_model, raw_session  # noqa: E402


def pngs(sample_rgbs) -> list[tuple[str, bytes]]:
    """Real photos at several sizes (shrunk and enlarged by the resize), a digit scan and noise, as PNG bytes.

    PNG is lossless: any difference would be the resampling's (JPEG decoders differ; see test_deploy.py).
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    images = []
    for k, rgb in enumerate(sample_rgbs):
        for side in (640, 300, 97):
            photo = Image.fromarray(rgb)
            images.append((f"photo{k}-{side}", photo.resize((side, round(side * photo.height / photo.width)))))
    images.append(("digit", Image.fromarray((load_digits().images[0] * 16).astype(np.uint8))))
    images.append(("noise", Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8))))
    out = []
    for name, image in images:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append((name, buf.getvalue()))
    return out


@pytest.mark.parametrize("interpolation", sorted(FILTERS))
@pytest.mark.parametrize("resize", [256, None])
def test_resampling_in_the_graph_follows_pillow(interpolation, resize, sample_rgbs, tmp_path, image_batch):
    import onnx

    cfg = ImagePreprocess(size=224, resize=resize, interpolation=interpolation, mean=(0.5,) * 3, std=(0.5,) * 3)
    path = tmp_path / "pre.onnx"
    onnx.save(preprocessing_model("image", preprocess=cfg.to_dict(), outputs={"pixel_values": "x"}, opset=17), path)
    session = raw_session(path)
    for name, data in pngs(sample_rgbs):
        got = session.run(None, {"image": np.frombuffer(data, np.uint8)})[0]
        want = image_batch([decode_image(data)], cfg)
        # Pillow's weights, fixed point and rounding, float32 box included: the same bits
        assert np.array_equal(got, want), (name, np.abs(got - want).max() * 255 * 0.5)


def test_only_bert_wordpiece_tokenizers_and_pillow_filters(minilm_tokenizer_json, tmp_path):
    spec = json.loads(minilm_tokenizer_json.read_text())
    spec["model"]["type"] = "BPE"
    other = tmp_path / "bpe.json"
    other.write_text(json.dumps(spec))
    with pytest.raises(DeployError, match="needs a BERT WordPiece tokenizer"):
        preprocessing_model("text", preprocess={"max_length": 16}, outputs={"input_ids": "x"}, opset=17,
                            tokenizer_json=other)
    cfg = ImagePreprocess(interpolation="nearest").to_dict()
    with pytest.raises(DeployError, match="no raw-input resampling for interpolation 'nearest'"):
        preprocessing_model("image", preprocess=cfg, outputs={"pixel_values": "x"}, opset=17)
