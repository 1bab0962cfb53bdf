#!/usr/bin/env bash
# FlashAttention-4 (PyPI flash-attn-4, CuTe DSL) for the GPU machine, in two parts across two calls.
#
# Why two: FA4 needs nvidia-cutlass-dsl-libs-cu13, a 92 MB wheel (its MLIR compiler library alone
# is 193 MB unpacked), and one GPU call carries at most 64 MiB (the work tree, ~12 MB, and .whl,
# ~10 MB, included). Repacked with xz it is ~62 MB: split with the other FA4 wheels (~10 MB) into two
# parts of ~36 MB, each call carries the tree + .whl + one part (~58 MB). The first call stashes its
# part in an ignored folder, which the GPU machine keeps while it stays warm; the second joins both
# (checked against their sha256) and installs. The two calls must run back to back: a machine handed
# back in between loses the stash (run `status` first: the second call must find it warm).
#
#   bench/fa4_wheels.sh prepare     here, once per checkout (downloads ~100 MB; xz takes ~10 min of one core)
#   bench/fa4_wheels.sh stash       on the GPU machine, 1st call, carry [".whl", ".fa4/part1"]
#   bench/fa4_wheels.sh install     on the GPU machine, 2nd call, carry [".whl", ".fa4/part2"];
#                                   installs into /tmp/site (already on PYTHONPATH per the device README)
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
FA4=(flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1
     nvidia-cutlass-dsl-libs-core==4.8.1 quack-kernels==0.6.5 apache-tvm-ffi==0.1.15.post2
     torch-c-dlpack-ext==0.1.5 einops==0.8.2 protobuf==7.36.2)
LIBS=nvidia-cutlass-dsl-libs-cu13==4.8.1
SITE=${SITE:-/tmp/site}

download() {  # wheels for Python 3.12 on x86-64, no dependencies (the GPU image has torch and CUDA)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$1" "${@:2}"
}

case "${1:-}" in
prepare)
  grep -qxF '/.fa4/' .git/info/exclude 2>/dev/null || echo '/.fa4/' >> .git/info/exclude
  grep -qxF '/.fa4-stash/' .git/info/exclude 2>/dev/null || echo '/.fa4-stash/' >> .git/info/exclude
  rm -rf .fa4 && mkdir -p .fa4/work/small .fa4/work/libs .fa4/part1 .fa4/part2
  download .fa4/work/small "${FA4[@]}"
  download .fa4/work/libs "$LIBS"
  mkdir -p .fa4/work/unpacked && python3 -m zipfile -e .fa4/work/libs/*.whl .fa4/work/unpacked
  # the wheel's files as they install into site-packages (its .dist-info included)
  tar -C .fa4/work/unpacked -cf - . | xz -9 -T0 > .fa4/work/libs.tar.xz
  small_bytes=$(du -cb .fa4/work/small/*.whl | tail -1 | cut -f1)
  total=$(( $(stat -c %s .fa4/work/libs.tar.xz) + small_bytes ))
  # part 1: the first half of the payload; part 2: the rest of the archive and the small wheels
  split -b $(( total / 2 )) -d -a 1 .fa4/work/libs.tar.xz .fa4/work/libs.tar.xz.
  mv .fa4/work/libs.tar.xz.0 .fa4/part1/
  mv .fa4/work/libs.tar.xz.[1-9] .fa4/part2/ && cp .fa4/work/small/*.whl .fa4/part2/
  (cd .fa4/work && sha256sum libs.tar.xz) > .fa4/part2/libs.tar.xz.sha256
  rm -rf .fa4/work
  du -sh .fa4/part1 .fa4/part2
  ;;
stash)
  mkdir -p .fa4-stash && cp .fa4/part1/* .fa4-stash/
  ls -l .fa4-stash
  ;;
install)
  test -e .fa4-stash/libs.tar.xz.0 || { echo "fa4_wheels.sh: part 1 is not here (.fa4-stash): the machine was handed back since the stash call; run stash again" >&2; exit 1; }
  cat .fa4-stash/libs.tar.xz.0 .fa4/part2/libs.tar.xz.[1-9] > /tmp/libs.tar.xz
  (cd /tmp && sha256sum -c "$root/.fa4/part2/libs.tar.xz.sha256")
  mkdir -p "$SITE"
  python3 -c "import tarfile, sys; tarfile.open('/tmp/libs.tar.xz').extractall(sys.argv[1], filter='data')" "$SITE"
  python3 -c "import google.protobuf" 2>/dev/null && rm -f .fa4/part2/protobuf-*.whl  # keep the image's own
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .fa4/part2/*.whl
  python3 -c "import cuda.bindings" 2>/dev/null \
    || echo "fa4_wheels.sh: cuda-bindings is missing on this machine; FA4's CuTe DSL needs it (carry a cuda-bindings 13.x wheel)" >&2
  PYTHONPATH="$SITE:${PYTHONPATH:-}" python3 -c "import flash_attn.cute.interface as fa; print('flash_attn.cute', fa.__file__)"
  ;;
*)
  echo "usage: bench/fa4_wheels.sh prepare|stash|install (see the comments at the top)" >&2
  exit 2
  ;;
esac
