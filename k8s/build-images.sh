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
#   --push      docker push the images after building them
#
# Needs: the project's environment (make install; BENTOML from .venv/bin), the `sentiment` and
# `topic` models in the BentoML store (textcls export, or textcls build-defaults), and Docker with
# buildx for `bentoml containerize`. The Bentos build offline; the images need the network (base
# images, PyPI). Prints the `images:` lines for the Kustomize overlays at the end.
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
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ONLY" in ""|cpu|gpu) ;; *) echo "build-images.sh: --only takes cpu or gpu" >&2; exit 2 ;; esac

export BENTOML_DO_NOT_TRACK=True
# bentoml build imports the service, which must find its Python packages (not torch)
export PATH="$PWD/$BIN:$PATH"
command -v bentoml >/dev/null || { echo "build-images.sh: no bentoml in $BIN; run make install" >&2; exit 1; }

for model in sentiment topic; do
  bentoml models get "$model" >/dev/null 2>&1 || {
    echo "build-images.sh: no '$model' model in the BentoML store; run \`textcls export\` or \`textcls build-defaults\` first" >&2
    exit 1
  }
done

# `bentoml build -o tag` prints __tag__:NAME:VERSION
build() {  # build BENTOFILE [VERSION] -> prints the version
  local out
  out=$(bentoml build -f "$1" ${2:+--version "$2"} -o tag .)
  echo "$out" | sed -n 's/^__tag__:[^:]*:\(.*\)$/\1/p' | tail -1
}

containerize() {  # containerize BENTO IMAGE
  bentoml containerize "$1" --image-tag "$2" --opt platform="$PLATFORM"
  if [ "$PUSH" = 1 ]; then docker push "$2"; fi
}

images=()
if [ "$ONLY" != gpu ]; then
  TAG=$(build bentofile.yaml "$TAG")
  [ -n "$TAG" ] || { echo "build-images.sh: bentoml build gave no version" >&2; exit 1; }
  echo "build-images.sh: Bento textcls:$TAG"
  containerize "textcls:$TAG" "$REGISTRY/textcls:$TAG"
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
