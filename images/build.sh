#!/usr/bin/env bash
# Build (and push) kubetune's two images to a registry you name, tagged with the chart's appVersion:
#   <registry>/operator:<appVersion>   multi-arch when pushed (linux/amd64, linux/arm64 by default)
#   <registry>/trainer:<appVersion>    linux/amd64 only (the locked CUDA wheels are x86_64), always
# The chart pulls exactly these references with `--set registry=<registry>`.
#
# Usage (from anywhere; builds from the repository root):
#   images/build.sh --registry registry.example.com/ml [--push] [--tool docker|podman]
#                   [--only operator|trainer] [--platforms linux/amd64,linux/arm64] [--dry-run]
#                   [--base-digests FILE]
#   images/build.sh --refresh-base-digests [--tool docker|podman] [--base-digests FILE]
#
#   --push       push to the registry (log in first: docker/podman login) and print the pushed
#                digests. Without it the images are kept locally, each built for one platform:
#                the trainer for linux/amd64, the operator for the first of --platforms.
#   --tool       docker (buildx) or podman; default: docker if present, else podman.
#   --dry-run    print the commands, run nothing (empty base digests are shown as UNSET).
#   --base-digests  the base image digests (default images/base-images.lock); a build refuses
#                to start while a digest it needs is empty.
#   --refresh-base-digests  look up the current digest of every tag in that file (docker buildx
#                imagetools inspect, or skopeo inspect --raw) and write it there; review and commit.
# images/README.md describes the release process.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
registry="" push=0 tool="" only="" dry=0 platforms="linux/amd64,linux/arm64" refresh=0
digests="$root/images/base-images.lock"

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
    --base-digests) [ $# -ge 2 ] || die "--base-digests needs a value"; digests="$2"; shift 2 ;;
    --base-digests=*) digests="${1#*=}"; shift ;;
    --refresh-base-digests) refresh=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ -f "$digests" ] || die "no base image digest file $digests"
if [ -z "$tool" ]; then
  if command -v docker >/dev/null 2>&1; then tool=docker
  elif command -v podman >/dev/null 2>&1; then tool=podman
  elif [ "$dry" = 1 ]; then tool=docker
  else die "neither docker nor podman found"
  fi
fi
case "$tool" in docker|podman) ;; *) die "--tool must be docker or podman" ;; esac

run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$dry" = 0 ]; then "$@"; fi
}

# base-images.lock lines: ARG_NAME image:tag [sha256:digest]
lookup() {  # ARG_NAME -> "image:tag digest"
  awk -v n="$1" '$1 == n { print $2, $3; found = 1 } END { exit !found }' "$digests" || die "$digests has no line for $1"
}

if [ "$refresh" = 1 ]; then
  tmp="$(mktemp)"; trap 'rm -f "$tmp"' EXIT
  while read -r name ref _; do
    case "$name" in ""|\#*) continue ;; esac
    if command -v skopeo >/dev/null 2>&1; then
      # The digest of the manifest (list) is the sha256 of its raw bytes.
      digest="sha256:$(skopeo inspect --raw "docker://$ref" | sha256sum | cut -d' ' -f1)"
    elif [ "$tool" = docker ]; then
      digest="$(docker buildx imagetools inspect "$ref" | awk '/^Digest:/ { print $2; exit }')"
    else
      die "--refresh-base-digests needs skopeo or docker buildx"
    fi
    case "$digest" in sha256:????????????????????????????????????????????????????????????????) ;; *) die "no digest for $ref" ;; esac
    echo "$name $ref $digest"
  done < "$digests" > "$tmp"
  awk 'NR == FNR { d[$1] = $0; next } ($1 in d) { print d[$1]; next } { print }' "$tmp" "$digests" > "$tmp.new"
  mv "$tmp.new" "$digests"
  echo "images/build.sh: wrote $digests; review the digests (git diff) and commit them"
  exit 0
fi

[ -n "$registry" ] || die "--registry is required, e.g. --registry registry.example.com/ml"
registry="${registry%/}"
case "$registry" in
  *[!a-z0-9./:_-]*|/*|*//*) die "--registry '$registry' is not a registry path (lowercase host[:port]/path)" ;;
esac
case "$only" in ""|operator|trainer) ;; *) die "--only must be operator or trainer" ;; esac

version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$root/charts/kubetune/Chart.yaml")"
[ -n "$version" ] || die "no appVersion in charts/kubetune/Chart.yaml"

bargs=()
build_args() {  # ARG names -> bargs=(--build-arg NAME=sha256:... ...); refuses an empty digest
  local name ref digest
  bargs=()
  for name; do
    read -r ref digest <<<"$(lookup "$name")"
    if [ -z "$digest" ]; then
      if [ "$dry" = 1 ]; then
        echo "images/build.sh: warning: $name ($ref) has no digest in $digests" >&2; digest="UNSET"
      else
        die "$name ($ref) has no digest in $digests: a build from an unpinned base is refused. Run images/build.sh --refresh-base-digests, review and commit (images/README.md)"
      fi
    fi
    bargs+=(--build-arg "$name=$digest")
  done
}

meta="$(mktemp -d)"; trap 'rm -rf "$meta"' EXIT
pushed=()

build() {  # name, platforms, base digest ARG names...
  local name="$1" plats="$2" ref="$registry/$1:$version"
  shift 2
  local file="$root/images/$name/Dockerfile"
  build_args "$@"
  if [ "$push" = 0 ]; then plats="${plats%%,*}"; fi  # a local image has one platform
  if [ "$tool" = docker ]; then
    if [ "$push" = 1 ]; then
      run docker buildx build --platform "$plats" "${bargs[@]}" -f "$file" -t "$ref" --metadata-file "$meta/$name.json" --push "$root"
      [ "$dry" = 1 ] || pushed+=("$ref@$(sed -n 's/.*"containerimage.digest": *"\([^"]*\)".*/\1/p' "$meta/$name.json" | head -n1)")
    else
      run docker buildx build --platform "$plats" "${bargs[@]}" -f "$file" -t "$ref" --load "$root"
    fi
  else
    if [ "$push" = 1 ]; then
      # `podman build --manifest` adds to an existing list: start from none, so no stale entry is pushed.
      if [ "$dry" = 1 ] || podman manifest exists "$ref"; then run podman manifest rm "$ref"; fi
      run podman build --platform "$plats" "${bargs[@]}" --manifest "$ref" -f "$file" "$root"
      run podman manifest push --all --digestfile "$meta/$name.digest" "$ref" "docker://$ref"
      [ "$dry" = 1 ] || pushed+=("$ref@$(cat "$meta/$name.digest")")
    else
      run podman build --platform "$plats" "${bargs[@]}" -t "$ref" -f "$file" "$root"
    fi
  fi
  echo "$ref"
}

if [ -z "$only" ] || [ "$only" = operator ]; then build operator "$platforms" PYTHON_DIGEST; fi
if [ -z "$only" ] || [ "$only" = trainer ]; then build trainer linux/amd64 CUDA_DEVEL_DIGEST CUDA_BASE_DIGEST; fi
if [ "$push" = 1 ]; then
  for ref in ${pushed[@]+"${pushed[@]}"}; do echo "pushed: $ref"; done
  echo "Install with: helm install kubetune charts/kubetune -n kubetune-system --create-namespace --set registry=$registry"
fi
