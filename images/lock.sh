#!/usr/bin/env bash
# Compile (or, with --check, verify) the images' hashed locks with uv, from PyPI only:
#   images/trainer/requirements.lock  Python 3.12, manylinux_2_28_x86_64 (the trainer image: Ubuntu 24.04's
#                                     python3, linux/amd64): pyproject core + `train` extra +
#                                     images/trainer/requirements.in, constrained by images/trainer/pins.txt
#   images/operator/requirements.lock Python 3.11 (python:3.11-slim), universal (amd64 and arm64 in one lock):
#                                     pyproject core + `operator` extra + images/operator/requirements.in
#   images/sbom-tool.lock             cyclonedx-bom, universal, Python 3.11+ (both images' SBOM step)
# Every package carries its hashes; the Dockerfiles install them with --require-hashes.
#
# Usage: images/lock.sh [--check] [--upgrade] [--print-uv]
#   --check    re-resolve into a temp dir and fail when a committed lock differs (what CI runs,
#              through images/check_stack.py); reads metadata only (no wheels), ~100 MB of index
#              pages and two sdists, about 20 s.
#   --upgrade  take the newest versions the pins allow (default: keep the locked ones).
#   --print-uv print the uv this script uses (installing it first if needed) and exit.
# uv: $UV, else `uv` on PATH if it is UV_VERSION, else uv==UV_VERSION installed from PyPI into a
# throwaway venv under ${TMPDIR:-/tmp}. UV_VERSION is the uv that wrote the committed locks: another
# version may format them differently, and --check (CI) would fail on the formatting alone.
# Change it together with a re-lock.
UV_VERSION=0.13.9
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
check=0 upgrade=() print_uv=0
for arg; do
  case "$arg" in
    --check) check=1 ;;
    --upgrade) upgrade=(--upgrade) ;;
    --print-uv) print_uv=1 ;;
    *) echo "images/lock.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
uv="${UV:-}"
if [ -z "$uv" ] && command -v uv >/dev/null 2>&1 && [ "$(uv --version 2>/dev/null | awk '{ print $2 }')" = "$UV_VERSION" ]; then
  uv="$(command -v uv)"
fi
if [ -z "$uv" ]; then
  venv="${TMPDIR:-/tmp}/kubetune-uv-$UV_VERSION"
  [ -x "$venv/bin/uv" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --isolated -q --index-url https://pypi.org/simple "uv==$UV_VERSION"; }
  uv="$venv/bin/uv"
fi
if [ "$print_uv" = 1 ]; then echo "$uv"; exit 0; fi
# One index, no user/site uv.toml, no pip.conf: the lock must say what PyPI serves.
common=(--no-config --index-url https://pypi.org/simple --generate-hashes --no-header --quiet)
out="$root/images"
if [ "$check" = 1 ]; then out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT; mkdir -p "$out/trainer" "$out/operator"; fi
seed() { if [ "$check" = 1 ] && [ -f "$root/images/$1" ]; then cp "$root/images/$1" "$out/$1"; fi; }

seed trainer/requirements.lock
"$uv" pip compile "${common[@]}" "${upgrade[@]}" images/trainer/requirements.in pyproject.toml --extra train \
  --constraint images/trainer/pins.txt --python-version 3.12 --python-platform x86_64-manylinux_2_28 \
  -o "$out/trainer/requirements.lock"
seed operator/requirements.lock
"$uv" pip compile "${common[@]}" "${upgrade[@]}" images/operator/requirements.in pyproject.toml --extra operator \
  --universal --python-version 3.11 -o "$out/operator/requirements.lock"
seed sbom-tool.lock
"$uv" pip compile "${common[@]}" "${upgrade[@]}" images/sbom-tool.in --universal --python-version 3.11 \
  -o "$out/sbom-tool.lock"

if [ "$check" = 1 ]; then
  rc=0
  for lock in trainer/requirements.lock operator/requirements.lock sbom-tool.lock; do
    if ! diff -u "$root/images/$lock" "$out/$lock"; then
      echo "images/lock.sh: images/$lock is not what its inputs resolve to; run images/lock.sh and commit" >&2; rc=1
    fi
  done
  exit "$rc"
fi
