#!/usr/bin/env bash
# FlashAttention-4 (PyPI flash-attn-4, CuTe DSL) for the GPU machine, in two parts across two calls.
#
# Why two: FA4 needs nvidia-cutlass-dsl-libs-cu13, a 92 MB wheel (its MLIR compiler library alone
# is 193 MB unpacked), and one GPU call carries at most 64 MiB (the work tree, ~13 MB, included).
# Repacked with xz it is ~64 MB: its first PART1_MB (default 21) MB make part 1, small enough to ride
# with another call's payload (.whl and the Ray extra, ~33 MB); the rest of the archive and the other
# FA4 wheels (~10 MB) make part 2 (~52 MB; with the tree ~65 MB of the 67). The first call stashes
# part 1 under reports/ (ignored by the tracked .gitignore, so the GPU machine keeps it between
# calls; a folder ignored only by .git/info/exclude is wiped, since that file does not travel); the
# second joins both (checked against their sha256) and installs. The two calls must run back to
# back: an idle machine goes back after 30 s, and a fresh one has no stash.
#
#   bench/fa4_wheels.sh prepare     here, once per checkout (downloads ~100 MB; xz takes ~6 min of two cores)
#   bench/fa4_wheels.sh stash       on the GPU machine, 1st call, carry [".fa4/part1", ...]
#   bench/fa4_wheels.sh install     on the GPU machine, 2nd call, carry [".fa4/part2"]; installs into
#                                   $SITE (default reports/site, kept between calls like the stash)
#                                   and prints the PYTHONPATH to export:
#                                   $SITE:$SITE/nvidia_cutlass_dsl/dsl_packages (the wheels' .pth file,
#                                   which adds the second, is not read from a PYTHONPATH folder)
# Measured with it: baselines/h200-speed/README.md (FA4: 676-688 TFLOP/s on an H200 at 75,600 tokens, two calls).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
FA4=(flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1
     nvidia-cutlass-dsl-libs-core==4.8.1 quack-kernels==0.6.5 apache-tvm-ffi==0.1.15.post2
     torch-c-dlpack-ext==0.1.5)  # einops, protobuf: the GPU image has them
LIBS=nvidia-cutlass-dsl-libs-cu13==4.8.1
SITE=${SITE:-$root/reports/site}
STASH=$root/reports/fa4-stash

download() {  # wheels for Python 3.12 on x86-64, no dependencies (the GPU image has torch and CUDA)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$1" "${@:2}"
}

case "${1:-}" in
prepare)
  grep -qxF '/.fa4/' .git/info/exclude 2>/dev/null || echo '/.fa4/' >> .git/info/exclude
  rm -rf .fa4 && mkdir -p .fa4/work/small .fa4/work/libs .fa4/part1 .fa4/part2
  download .fa4/work/small "${FA4[@]}"
  download .fa4/work/libs "$LIBS"
  mkdir -p .fa4/work/unpacked && python3 -m zipfile -e .fa4/work/libs/*.whl .fa4/work/unpacked
  # the wheel's files as they install into site-packages (its .dist-info included)
  tar -C .fa4/work/unpacked -cf - . | xz -9 -T0 > .fa4/work/libs.tar.xz
  # part 1: the archive's first PART1_MB MB; part 2: the rest of the archive and the small wheels
  head -c $(( ${PART1_MB:-21} * 1000000 )) .fa4/work/libs.tar.xz > .fa4/part1/libs.tar.xz.0
  tail -c +$(( ${PART1_MB:-21} * 1000000 + 1 )) .fa4/work/libs.tar.xz > .fa4/part2/libs.tar.xz.1
  cp .fa4/work/small/*.whl .fa4/part2/
  (cd .fa4/work && sha256sum libs.tar.xz) > .fa4/part2/libs.tar.xz.sha256
  rm -rf .fa4/work
  du -sh .fa4/part1 .fa4/part2
  ;;
stash)
  mkdir -p "$STASH" && cp .fa4/part1/* "$STASH"/
  ls -l "$STASH"
  ;;
install)
  test -e "$STASH/libs.tar.xz.0" || { echo "fa4_wheels.sh: part 1 is not here ($STASH): the machine was handed back since the stash call; run stash again" >&2; exit 1; }
  cat "$STASH/libs.tar.xz.0" .fa4/part2/libs.tar.xz.[1-9] > /tmp/libs.tar.xz
  (cd /tmp && sha256sum -c "$root/.fa4/part2/libs.tar.xz.sha256")
  mkdir -p "$SITE"
  python3 -c "import tarfile, sys; tarfile.open('/tmp/libs.tar.xz').extractall(sys.argv[1], filter='data')" "$SITE"
  # unzipped, not `pip install --target`: three of the wheels share the folder nvidia_cutlass_dsl/,
  # which pip --target will not merge (it skips a wheel whose top folder exists)
  for wheel in .fa4/part2/*.whl; do python3 -m zipfile -e "$wheel" "$SITE"; done
  python3 -c "import cuda.bindings" 2>/dev/null \
    || echo "fa4_wheels.sh: cuda-bindings is missing on this machine; FA4's CuTe DSL needs it (carry a cuda-bindings 13.x wheel)" >&2
  path="$SITE:$SITE/nvidia_cutlass_dsl/dsl_packages"
  PYTHONPATH="$path:${PYTHONPATH:-}" python3 -c "import flash_attn.cute.interface as fa; print('flash_attn.cute', fa.__file__)"
  echo "export PYTHONPATH=\$PWD:$path  # then: attention flash_attn4"
  ;;
*)
  echo "usage: bench/fa4_wheels.sh prepare|stash|install (see the comments at the top)" >&2
  exit 2
  ;;
esac
