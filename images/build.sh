#!/usr/bin/env bash
# Build (and push) kubetune's two images to a registry you name, tagged with the chart's appVersion:
#   <registry>/operator:<appVersion>   multi-arch (linux/amd64, linux/arm64 by default)
#   <registry>/trainer:<appVersion>    linux/amd64 (CUDA wheels exist for amd64 only)
# The chart pulls exactly these references with `--set registry=<registry>`.
#
# Usage (from anywhere; builds from the repository root):
#   images/build.sh --registry registry.example.com/ml [--push] [--tool docker|podman]
#                   [--only operator|trainer] [--platforms linux/amd64,linux/arm64] [--dry-run]
#
#   --push       push to the registry (log in first: docker/podman login). Without it the
#                images are built for this machine's platform only and kept locally.
#   --tool       docker (buildx) or podman; default: docker if present, else podman.
#   --dry-run    print the commands, run nothing.
# images/README.md describes the release process.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
registry="" push=0 tool="" only="" dry=0 platforms="linux/amd64,linux/arm64"

die() { echo "images/build.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --registry) [ $# -ge 2 ] || die "--registry needs a value"; registry="$2"; shift 2 ;;
    --registry=*) registry="${1#*=}"; shift ;;
    --push) push=1; shift ;;
    --tool) [ $# -ge 2 ] || die "--tool needs a value"; tool="$2"; shift 2 ;;
    --tool=*) tool="${1#*=}"; shift ;;
    --only) [ $# -ge 2 ] || die "--only needs a value"; only="$2"; shift 2 ;;
    --only=*) only="${1#*=}"; shift ;;
    --platforms) [ $# -ge 2 ] || die "--platforms needs a value"; platforms="$2"; shift 2 ;;
    --platforms=*) platforms="${1#*=}"; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ -n "$registry" ] || die "--registry is required, e.g. --registry registry.example.com/ml"
registry="${registry%/}"
case "$registry" in
  *[!a-z0-9./:_-]*|/*|*//*) die "--registry '$registry' is not a registry path (lowercase host[:port]/path)" ;;
esac
case "$only" in ""|operator|trainer) ;; *) die "--only must be operator or trainer" ;; esac
if [ -z "$tool" ]; then
  if command -v docker >/dev/null 2>&1; then tool=docker
  elif command -v podman >/dev/null 2>&1; then tool=podman
  elif [ "$dry" = 1 ]; then tool=docker
  else die "neither docker nor podman found"
  fi
fi
case "$tool" in docker|podman) ;; *) die "--tool must be docker or podman" ;; esac

version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$root/charts/kubetune/Chart.yaml")"
[ -n "$version" ] || die "no appVersion in charts/kubetune/Chart.yaml"

run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$dry" = 0 ]; then "$@"; fi
}

build() {  # name, platforms
  local name="$1" plats="$2" ref="$registry/$1:$version"
  local file="$root/images/$name/Dockerfile"
  if [ "$tool" = docker ]; then
    if [ "$push" = 1 ]; then
      run docker buildx build --platform "$plats" -f "$file" -t "$ref" --push "$root"
    else
      run docker buildx build -f "$file" -t "$ref" --load "$root"
    fi
  else
    if [ "$push" = 1 ]; then
      run podman build --platform "$plats" --manifest "$ref" -f "$file" "$root"
      run podman manifest push --all "$ref" "docker://$ref"
    else
      run podman build -f "$file" -t "$ref" "$root"
    fi
  fi
  echo "$ref"
}

if [ -z "$only" ] || [ "$only" = operator ]; then build operator "$platforms"; fi
if [ -z "$only" ] || [ "$only" = trainer ]; then build trainer linux/amd64; fi
if [ "$push" = 1 ]; then
  echo "Install with: helm install kubetune charts/kubetune -n kubetune-system --create-namespace --set registry=$registry"
fi
