#!/usr/bin/env bash
# Runs ON a lent GPU machine, from the repository root (benchmarks/README.md, "GPU"):
#   bash benchmarks/gpu_device.sh parts   after a call that carried one part of the onnxruntime-gpu wheel
#                                          (the parts stay in .whl/ there while the machine is warm)
#   bash benchmarks/gpu_device.sh run     joins the parts, installs them and the carried wheels into /tmp/site,
#                                          runs benchmarks/gpu.py, then the CUDA tests; results go to $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/featx-gpu-out}
mkdir -p "$OUT"
if [ "${1:-run}" = parts ]; then
    ls -la .whl
    exit 0
fi
set -e
mkdir -p /tmp/wheels
for first in .whl/*.whl.part-00; do
    base=$(basename "${first%.part-00}")
    cat ".whl/$base".part-* > "/tmp/wheels/$base"
done
(cd /tmp/wheels && sha256sum -c "$OLDPWD/.whl/SHA256SUMS")
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    /tmp/wheels/*.whl .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" FEATX_HOME="$PWD/.featx" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# onnxruntime-gpu looks for CUDA 13 and cuDNN 9 by name: the nvidia-* packages PyTorch came with hold them
nvidia_libs=$(python3 -c 'import glob, os, site
print(":".join(sorted({os.path.dirname(p) for s in site.getsitepackages()
                       for p in glob.glob(os.path.join(s, "nvidia", "**", "lib*.so*"), recursive=True)})))')
export LD_LIBRARY_PATH="$nvidia_libs:${LD_LIBRARY_PATH:-}"
set +e
python3 -m featx doctor 2>&1 | tee "$OUT/doctor.txt"
timeout 450 python3 benchmarks/gpu.py 2>&1 | tee "$OUT/gpu.log"
cp benchmarks/results/gpu.json benchmarks/results/gpu.md "$OUT/"
timeout 120 python3 -m pytest -q -p no:cacheprovider -x tests/test_runtime_gpu.py tests/test_decode_workers.py \
    2>&1 | tail -40 | tee "$OUT/tests.log"
exit 0
