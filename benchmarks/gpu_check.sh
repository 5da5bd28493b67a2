#!/usr/bin/env bash
# The GPU checks in one run, for a machine with one CUDA GPU (an H100 takes a few minutes):
#   1. tests/test_cuda.py: bf16 and fp16 pretraining updates, a CTC step, parity with transformers on CUDA, the
#      memory-saving kernels under autocast (the FSDP test needs two GPUs and skips on one);
#   2. benchmarks/bench_vs_transformers.py on the GPU: TINY and BASE pretraining steps and BASE CTC inference, fp32
#      and bf16, ours against transformers' wav2vec2 in the same run, with model TFLOP/s and, for bf16 on a known
#      GPU, model FLOPs utilisation.
# Logs go to $OUT (the device tool's output folder) or runs/gpu_check.
#
# It needs torch with CUDA, transformers, accelerate, safetensors, numpy, pytest: what a CUDA PyTorch image has.
# Packages the machine lacks (soundfile and soxr, which `import hf_wav2vec2` needs, and soundfile's cffi and
# pycparser) are installed from wheels in .whl/ when that folder is there; fetch them where pip works with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl soundfile soxr cffi pycparser
# (the Python version of the GPU machine's; .whl/ is not tracked).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/gpu_check_site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
status=0
nvidia-smi 2>&1 | tee "$out/nvidia-smi.txt"
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" 2>&1 | tee "$out/versions.txt"
python3 -m pytest tests/test_cuda.py -v -p no:cacheprovider 2>&1 | tee "$out/test_cuda.log" || status=1
python3 benchmarks/bench_vs_transformers.py --device cuda 2>&1 | tee "$out/bench.log" || status=1
exit $status
