# Sourced by k8s/build-images.sh, k8s/base-image.sh and the image test's helpers: which container
# tool builds and runs images here. CONTAINER_TOOL=docker|podman|buildah forces one; otherwise
# docker when its daemon answers and it has buildx (what `bentoml containerize` uses with it),
# else podman, else buildah. Prints the tool's name; exits 2 with what to install when none works.
container_tool() {
  local tool=${CONTAINER_TOOL:-}
  if [ -n "$tool" ]; then
    case "$tool" in docker|podman|buildah) ;; *)
      echo "CONTAINER_TOOL=$tool: use docker, podman or buildah" >&2; return 2 ;;
    esac
    command -v "$tool" >/dev/null || { echo "CONTAINER_TOOL=$tool, but $tool is not installed" >&2; return 2; }
    echo "$tool"; return 0
  fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null; then
    echo podman
  elif command -v buildah >/dev/null; then
    echo buildah
  else
    {
      echo "no container tool: the image build needs one of"
      echo "  - Docker with buildx and a running daemon (https://docs.docker.com/engine/install/)"
      echo "  - podman (Debian/Ubuntu: apt-get install podman buildah runc fuse-overlayfs slirp4netns uidmap)"
      echo "  - buildah (apt-get install buildah)"
      if command -v docker >/dev/null; then
        echo "(docker is installed, but $(docker info >/dev/null 2>&1 && echo 'has no buildx' || echo 'its daemon does not answer'))"
      fi
    } >&2
    return 2
  fi
}
