"""fastembed as a peer of featx on the same texts: run by ``throughput.py`` section e, in fastembed's own venv.

fastembed pins its own onnxruntime (the CPU wheel) and huggingface-hub, which clash with featx's
(onnxruntime-gpu; transformers' huggingface-hub), so it runs in a venv of its own::

    python3 -m venv /tmp/fastembed-venv && /tmp/fastembed-venv/bin/pip install fastembed==0.9.1
    python benchmarks/throughput.py --sections e --fastembed-python /tmp/fastembed-venv/bin/python

This script loads fastembed's own layout of the model (an un-pooled ONNX export of the same weights
beside its tokenizer files, written by ``throughput.py``), warms up, embeds the texts ``--rounds``
times, and prints one JSON line: texts/s per round and the embeddings (rounded) for agreement.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--texts", required=True, help="a JSON file holding a list of texts")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "featx-benchmark/all-MiniLM-L6-v2-unpooled"
    TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                   sources=ModelSource(hf="featx-benchmark/none"), dim=384, model_file="model.onnx")
    model = TextEmbedding(model_name=name, specific_model_path=args.model_dir, threads=args.threads)
    texts = json.load(open(args.texts))
    embed = lambda: np.stack(list(model.embed(texts, batch_size=args.batch_size)))  # noqa: E731
    embed()  # warm-up
    rates = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        rows = embed()
        rates.append(len(texts) / (time.perf_counter() - t))
    print(json.dumps({"rates_texts_s": rates, "rows": rows.round(6).tolist()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
