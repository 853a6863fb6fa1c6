#!/usr/bin/env bash
# Build a base image for the textcls images from Debian's packages, for machines that reach
# Debian's mirror and PyPI but no container registry (docs/deploy.md#a-base-image-without-a-registry).
#
#   k8s/base-image.sh [--tag TAG] [--suite bookworm] [--mirror URL]
#
# It holds what BentoML's default base (python:3.11-slim) holds and the image build needs:
# Python 3.11 (Debian bookworm's), pip (to bootstrap uv in the build stage, which is not
# shipped) and the CA certificates; no docs, man pages, locales or perl. Then point the image build at it:
#
#   make image BASE_IMAGE=localhost/textcls-base:bookworm
#
# Needs mmdebstrap (Debian package `mmdebstrap`) and a container tool to import the root
# filesystem: podman, buildah or docker (picked like k8s/build-images.sh; CONTAINER_TOOL= forces
# one). Takes about 30 s on 2 cores. The image is built on this machine and never pushed.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${BASE_TAG:-localhost/textcls-base:bookworm}
SUITE=bookworm # its python3 is 3.11, the Bento's python_version
PATH_DEFAULT=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MIRROR=""

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --suite) SUITE=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "base-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# shellcheck source=k8s/container-tool.sh
. k8s/container-tool.sh
tool=$(container_tool) || exit 2
command -v mmdebstrap >/dev/null || {
  echo "base-image.sh: mmdebstrap is not installed; on Debian or Ubuntu: apt-get install mmdebstrap" >&2
  exit 2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
# minbase: dpkg, apt and the essential packages; python3 brings libpython3.11-stdlib and what it
# links. The merged-usr hook lays out /usr as bookworm's usrmerge package would, without
# installing it (it pulls in all of perl, 50 MB). The dpkg path filters keep docs, man pages,
# translations and glibc's iconv modules (which Python does not use) out; copyright files stay.
mmdebstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/lib/*/gconv/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
  --customize-hook='find "$1"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +' \
  "$SUITE" "$work/rootfs.tar" ${MIRROR:+"$MIRROR"}
if [ "$tool" = buildah ]; then
  container=$(buildah from scratch)
  buildah add "$container" "$work/rootfs.tar" / >/dev/null
  buildah config --cmd /usr/bin/python3 --env LANG=C.UTF-8 --env PATH="$PATH_DEFAULT" "$container"
  buildah commit --rm "$container" "$TAG" >/dev/null
  run() { podman run --rm "$TAG" "$@" 2>/dev/null || echo "(not run: buildah runs no containers)"; }
else
  "$tool" import --change 'CMD ["/usr/bin/python3"]' --change 'ENV LANG=C.UTF-8' --change "ENV PATH=$PATH_DEFAULT" \
    "$work/rootfs.tar" "$TAG" >/dev/null
  run() { "$tool" run --rm "$TAG" "$@"; }
fi
echo "base-image.sh: $TAG ($(python3 -c "print(round($(stat -c %s "$work/rootfs.tar") / 1e6))") MB," \
  "$(( $(date +%s) - started )) s) with $(run python3 --version 2>&1)"
