#!/usr/bin/env bash
# Build the textcls Bento and its two images (docs/deploy.md#images):
#
#   CPU: bentoml build (bentofile.yaml)            -> bentoml containerize -> REGISTRY/textcls:TAG
#   GPU: bentoml build (k8s/gpu_bentofile.py's     -> bentoml containerize -> REGISTRY/textcls-gpu:TAG
#        variant: onnxruntime-gpu, CUDA 13 + cuDNN 9 base image)
#
# usage: k8s/build-images.sh [--registry REGISTRY] [--tag TAG] [--only cpu|gpu] [--push]
#
#   --registry  image repository prefix (default $REGISTRY, else registry.example.com)
#   --tag       version of both Bentos and both images (default: the version `bentoml build`
#               gives the CPU Bento)
#   --only      build one image only
#   --push      push the images after building them
#
# Settings (environment):
#   BASE_IMAGE          the CPU image's base instead of BentoML's python:3.11-slim; it must hold
#                       python3.11 and uv or pip (k8s/base-image.sh builds one from Debian's packages)
#   CUDA_BASE_IMAGE     the GPU image's base (default in k8s/gpu_bentofile.py)
#   CONTAINER_TOOL      docker, podman or buildah (default: docker with buildx when its daemon
#                       answers, else podman, else buildah)
#   CONTAINERIZE_OPTS   more `bentoml containerize` options, for this machine's build only, e.g.
#                       "--opt volume=/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"
#                       behind a TLS proxy (what .ci/run passes); nothing of it enters the image
#
# Needs: the project's environment (make install; BENTOML from .venv/bin), the `sentiment` and
# `topic` models in the BentoML store (textcls export, or textcls build-defaults), and a container
# tool. The Bentos build offline; the images need PyPI (and a registry for the default bases).
# Writes the CPU image's name to build/image-cpu.tag (make image-test reads it) and prints the
# `images:` lines for the Kustomize overlays at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-registry.example.com}
TAG=""
ONLY=""
PUSH=0
BIN=${BIN:-.venv/bin}
PLATFORM=${PLATFORM:-linux/amd64}

while [ $# -gt 0 ]; do
  case "$1" in
    --registry) REGISTRY=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --push) PUSH=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ONLY" in ""|cpu|gpu) ;; *) echo "build-images.sh: --only takes cpu or gpu" >&2; exit 2 ;; esac

export BENTOML_DO_NOT_TRACK=True
# bentoml build imports the service, which must find its Python packages (not torch)
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
export PATH="$BIN:$PATH"
command -v bentoml >/dev/null || { echo "build-images.sh: no bentoml in $BIN; run make install" >&2; exit 1; }

for model in sentiment topic; do
  bentoml models get "$model" >/dev/null 2>&1 || {
    echo "build-images.sh: no '$model' model in the BentoML store; run \`textcls export\` or \`textcls build-defaults\` first" >&2
    exit 1
  }
done

# shellcheck source=k8s/container-tool.sh
. k8s/container-tool.sh
TOOL=$(container_tool) || exit 2

# `bentoml build -o tag` prints __tag__:NAME:VERSION
build() {  # build BENTOFILE [VERSION] -> prints the version
  local out
  out=$(bentoml build -f "$1" ${2:+--version "$2"} -o tag .)
  echo "$out" | sed -n 's/^__tag__:[^:]*:\(.*\)$/\1/p' | tail -1
}

check_base() {  # check_base IMAGE: python3.11 and uv or pip, when the image is here to look at
  local runner=$TOOL
  [ "$runner" = buildah ] && { command -v podman >/dev/null && runner=podman || return 0; }
  "$runner" image inspect "$1" >/dev/null 2>&1 || return 0  # pulled by the build, checked there
  if ! "$runner" run --rm --entrypoint sh "$1" -c 'command -v python3.11' >/dev/null 2>&1; then
    echo "build-images.sh: the base image $1 has no python3.11 (the Bento's python_version); use a" \
      "base with Python 3.11, e.g. k8s/base-image.sh" >&2
    exit 1
  fi
  if ! "$runner" run --rm --entrypoint sh "$1" -c 'command -v uv || python3.11 -m pip --version' >/dev/null 2>&1; then
    echo "build-images.sh: the base image $1 has neither uv nor pip, and the build installs the" \
      "requirements with uv; use a base with uv or pip, e.g. k8s/base-image.sh" >&2
    exit 1
  fi
}

containerize() {  # containerize BENTO IMAGE
  local opts=(--backend "$TOOL" --image-tag "$2")
  [ "$TOOL" = docker ] && opts+=(--opt platform="$PLATFORM")
  # BentoML renders a Bento's Dockerfile template only from inside the current directory
  # (bentoml/_internal/utils/filesystem.py resolve_user_filepath, 1.4.39), and it copies the Bento
  # to a temporary directory first: run it where that directory is.
  local context
  context=$(mktemp -d "$PWD/build/containerize.XXXXXX")
  # shellcheck disable=SC2086  # CONTAINERIZE_OPTS is a list of options
  (cd "$context" && TMPDIR="$context" bentoml containerize "$1" "${opts[@]}" ${CONTAINERIZE_OPTS:-}) \
    || { rm -rf "$context"; exit 1; }
  rm -rf "$context"
  if [ "$PUSH" = 1 ]; then "$TOOL" push "$2"; fi
}

mkdir -p build
images=()
if [ "$ONLY" != gpu ]; then
  bentofile=bentofile.yaml
  if [ -n "${BASE_IMAGE:-}" ]; then
    check_base "$BASE_IMAGE"
    bentofile=build/bentofile.cpu.yaml
    python - bentofile.yaml "$bentofile" "$BASE_IMAGE" <<'PY'
import sys
import yaml
source, target, base = sys.argv[1:]
spec = yaml.safe_load(open(source))
spec.setdefault("docker", {})["base_image"] = base
with open(target, "w") as f:
    f.write(f"# Generated from {source} by k8s/build-images.sh (BASE_IMAGE={base}); edit {source} instead.\n")
    yaml.safe_dump(spec, f, sort_keys=False)
PY
  fi
  TAG=$(build "$bentofile" "$TAG")
  [ -n "$TAG" ] || { echo "build-images.sh: bentoml build gave no version" >&2; exit 1; }
  echo "build-images.sh: Bento textcls:$TAG"
  started=$(date +%s)
  containerize "textcls:$TAG" "$REGISTRY/textcls:$TAG"
  echo "$REGISTRY/textcls:$TAG" > build/image-cpu.tag
  echo "build-images.sh: $REGISTRY/textcls:$TAG built in $(( $(date +%s) - started )) s"
  images+=("cpu textcls $REGISTRY/textcls $TAG")
fi
if [ "$ONLY" != cpu ]; then
  python k8s/gpu_bentofile.py bentofile.yaml build/bentofile.gpu.yaml ${CUDA_BASE_IMAGE:+"$CUDA_BASE_IMAGE"}
  TAG=$(build build/bentofile.gpu.yaml "$TAG")
  [ -n "$TAG" ] || { echo "build-images.sh: bentoml build gave no version" >&2; exit 1; }
  echo "build-images.sh: Bento textcls-gpu:$TAG"
  containerize "textcls-gpu:$TAG" "$REGISTRY/textcls-gpu:$TAG"
  images+=("gpu textcls-gpu $REGISTRY/textcls-gpu $TAG")
fi

echo
echo "Point the overlays at these images (k8s/overlays/<overlay>/kustomization.yaml; the CPU image"
echo "also in k8s/jobs/batch-score and its merge/):"
for line in "${images[@]}"; do
  set -- $line
  echo "  $1: images: [{name: textcls, newName: $3, newTag: \"$4\"}]"
  echo "       or: (cd k8s/overlays/$1 && kustomize edit set image textcls=$3:$4)"
done
