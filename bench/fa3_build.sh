#!/usr/bin/env bash
# Build the `fa3_fp8` attention library: csrc/fa3_fp8.cu + FlashAttention-3's Hopper kernel headers.
#
#   bash bench/fa3_build.sh            # ~2 min on one CPU core; no GPU needed; prints the .so to export
#   export WANBENCH_FA3_LIB=$PWD/reports/fa3/libwan_fa3_fp8.so
#
# What it needs, and where it looks:
#   FA_DIR       a flash-attention checkout (default reports/fa3/flash-attention) with its csrc/cutlass
#                submodule; measured with flash-attention 0251105a and its pinned CUTLASS 7127592:
#                  git clone https://github.com/Dao-AILab/flash-attention reports/fa3/flash-attention
#                  git -C reports/fa3/flash-attention submodule update --init csrc/cutlass
#   CUTLASS_DIR  CUTLASS's include root's parent (default $FA_DIR/csrc/cutlass)
#   the CUDA 13.0 compiler: taken from PyPI wheels (nvidia-cuda-nvcc, -crt, nvidia-nvvm, -cuda-runtime,
#                -cuda-cccl) into reports/fa3/cuda, unless NVCC names an nvcc whose include/ has the rest.
# The library links the CUDA runtime statically and nothing of torch, so one build serves any torch on a
# driver that runs CUDA 13 (the H200 machine: driver 580, torch 2.11+cu130). It holds one kernel:
# e4m3 q/k/v, bf16 out, head dim 128, sm_90a (compute capability 9.0 only).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=${OUT_DIR:-$ROOT/reports/fa3}
FA_DIR=${FA_DIR:-$OUT_DIR/flash-attention}
CUTLASS_DIR=${CUTLASS_DIR:-$FA_DIR/csrc/cutlass}
mkdir -p "$OUT_DIR"

if [[ ! -f $FA_DIR/hopper/flash_fwd_launch_template.h ]]; then
    echo "fa3_build: no FlashAttention-3 sources at FA_DIR=$FA_DIR (hopper/flash_fwd_launch_template.h);" >&2
    echo "  git clone https://github.com/Dao-AILab/flash-attention $FA_DIR && git -C $FA_DIR submodule update --init csrc/cutlass" >&2
    exit 2
fi
if [[ ! -f $CUTLASS_DIR/include/cute/tensor.hpp ]]; then
    echo "fa3_build: no CUTLASS headers at CUTLASS_DIR=$CUTLASS_DIR (include/cute/tensor.hpp);" >&2
    echo "  git -C $FA_DIR submodule update --init csrc/cutlass" >&2
    exit 2
fi

if [[ -z ${NVCC:-} ]]; then
    CUDA_DIR=$OUT_DIR/cuda
    if [[ ! -x $CUDA_DIR/nvidia/cu13/bin/nvcc || ! -x $CUDA_DIR/nvidia/cu13/nvvm/bin/cicc ]]; then
        mkdir -p "$CUDA_DIR/wheels"
        python3 -m pip download -q --no-deps -d "$CUDA_DIR/wheels" \
            nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
            nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
        for wheel in "$CUDA_DIR"/wheels/*.whl; do
            python3 -m zipfile -e "$wheel" "$CUDA_DIR"
        done
        chmod +x "$CUDA_DIR"/nvidia/cu13/bin/* "$CUDA_DIR"/nvidia/cu13/nvvm/bin/*  # zipfile drops the mode bits
    fi
    NVCC=$CUDA_DIR/nvidia/cu13/bin/nvcc
fi
CUDA_HOME_DIR=$(cd "$(dirname "$NVCC")/.." && pwd)

echo "fa3_build: $("$NVCC" --version | tail -1)" >&2
start=$(date +%s)
# The flags flash-attention's own build gives its sm90 kernels (hopper/setup.py) and torch's extension
# defaults, minus torch: -DNDEBUG matters (assertions cost speed), the DISABLE_* shrink the headers' work.
"$NVCC" -O3 -std=c++17 --use_fast_math --expt-relaxed-constexpr --expt-extended-lambda \
    -diag-suppress 20013,177,550 \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    -D__CUDA_NO_HALF2_OPERATORS__ -DCUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED -DCUTLASS_ENABLE_GDC_FOR_SM90 \
    -DCUTLASS_DEBUG_TRACE_LEVEL=0 -DNDEBUG -DFLASHATTENTION_DISABLE_BACKWARD -DFLASHATTENTION_DISABLE_SM8x \
    -gencode arch=compute_90a,code=sm_90a -Xcompiler -fPIC -shared \
    -I"$CUDA_HOME_DIR/include" -I"$CUDA_HOME_DIR/include/cccl" -I"$FA_DIR/hopper" -I"$CUTLASS_DIR/include" \
    -L"$CUDA_HOME_DIR/lib" -L"$CUDA_HOME_DIR/lib64" \
    -o "$OUT_DIR/libwan_fa3_fp8.so" "$ROOT/csrc/fa3_fp8.cu"
echo "fa3_build: built in $(( $(date +%s) - start )) s; now:" >&2
echo "export WANBENCH_FA3_LIB=$OUT_DIR/libwan_fa3_fp8.so"
