#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, cicc, headers) from PyPI into .cuda/ (git-ignored).
# Idempotent: a second run with the same pins does nothing. Prints the CUDA_HOME to export last.
#
# Why 13.0: the GPU machine's driver is 580 (CUDA 13.0) and cannot load PTX from a newer nvcc.
# nvidia-nvvm is pinned too, or pip brings a newer cicc.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.cuda"
pins=(
  'nvidia-cuda-nvcc==13.0.*'
  'nvidia-cuda-runtime==13.0.*'
  'nvidia-cuda-crt==13.0.*'
  'nvidia-cuda-cccl==13.0.*'
  'nvidia-nvvm==13.0.*'
)
stamp="$venv/.pins"
want=$(printf '%s\n' "${pins[@]}")
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
  printf '%s' "$want" >"$stamp"
fi
pyver=$("$venv/bin/python" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
cuda_home="$venv/lib/$pyver/site-packages/nvidia/cu13"
if [[ ! -x "$cuda_home/bin/nvcc" ]]; then
  echo "install-cuda: nvcc not found under $cuda_home" >&2
  exit 1
fi
# nvcc looks for cicc under ../nvvm/bin relative to itself; the nvvm wheel puts it there already.
echo "$cuda_home"
