#!/usr/bin/env bash
# Installs NCCL's runtime library (for the `nccl` feature: sharded selection across GPUs) from PyPI
# into .nccl/ (git-ignored). Idempotent. Prints the folder to put on LD_LIBRARY_PATH last.
#
# cudarc loads libnccl at run time by the names `libnccl.so` or `libnccl.so.<CUDA major>`; the
# wheel ships `libnccl.so.2`, so a `libnccl.so` link is added beside it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.nccl"
pins=('nvidia-nccl-cu13==2.32.*')
stamp="$venv/.pins"
want=$(printf '%s\n' "${pins[@]}")
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
  printf '%s' "$want" >"$stamp"
fi
pyver=$("$venv/bin/python" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
lib="$venv/lib/$pyver/site-packages/nvidia/nccl/lib"
if [[ ! -f "$lib/libnccl.so.2" ]]; then
  echo "install-nccl: libnccl.so.2 not found under $lib" >&2
  exit 1
fi
ln -sf libnccl.so.2 "$lib/libnccl.so"
echo "$lib"
