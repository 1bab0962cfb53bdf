#!/usr/bin/env bash
# Ray (the `ray` extra) for the GPU machine, which has no Ray and reaches no package index.
#
# The ray wheel for Python 3.12 is ~72 MB, over what one GPU call carries beside the work tree and .whl
# (64 MiB in all). Unpacked, less what `--executor ray` never imports (Java jars, RLlib, Tune, Train,
# Serve, Data, the dashboard's web client), stripped and xz-packed, it is ~22 MB. The wheel's zip drops the
# execute bits of Ray's own programs (gcs_server, raylet), which a local Ray then fails to start
# (PermissionError): they are set again here.
#
#   bench/ray_site.sh prepare    here: writes .ray/ray-site.tar.xz and the jsonschema wheels Ray imports
#   bench/ray_site.sh install    on the GPU machine, carry [".ray"]: into $SITE (default reports/site),
#                                then export PYTHONPATH=$PWD:$SITE and run `wanbench run SUITE --executor ray`
# Used for the --gpus 0 / --executor ray rows in baselines/h200-speed/scaleout-smoke-cuda/.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
RAY=ray==2.52.1
DEPS=(jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1)
SITE=${SITE:-$root/reports/site}

case "${1:-}" in
prepare)
  grep -qxF '/.ray/' .git/info/exclude 2>/dev/null || echo '/.ray/' >> .git/info/exclude
  rm -rf .ray && mkdir -p .ray/work/site
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .ray/work "$RAY" "${DEPS[@]}"
  python3 -m zipfile -e .ray/work/ray-*.whl .ray/work/site
  (cd .ray/work/site/ray && rm -rf jars rllib tune train serve data dashboard/client/build)
  programs=(.ray/work/site/ray/core/src/ray/gcs/gcs_server .ray/work/site/ray/core/src/ray/raylet/raylet)
  chmod +x "${programs[@]}"
  strip --strip-unneeded "${programs[@]}" .ray/work/site/ray/_raylet.so  # their symbols: ~30 of ~90 MB
  tar -C .ray/work/site -cf - . | xz -6 -T0 > .ray/ray-site.tar.xz
  mv .ray/work/*.whl .ray/ && rm -f .ray/ray-*.whl && rm -rf .ray/work
  du -sh .ray
  ;;
install)
  mkdir -p "$SITE"
  tar -C "$SITE" -xJf .ray/ray-site.tar.xz
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .ray/*.whl
  PYTHONPATH="$SITE:${PYTHONPATH:-}" python3 -c "import ray; print('ray', ray.__version__)"
  ;;
*)
  echo "usage: bench/ray_site.sh prepare|install (see the comments at the top)" >&2
  exit 2
  ;;
esac
