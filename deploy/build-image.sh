#!/bin/bash
# Build the lbaffd container image (Dockerfile) with whichever OCI builder this
# machine has: podman, buildah, or docker with a reachable engine.  With none,
# say so and succeed: `make image` is then skipped, not failed.
#   deploy/build-image.sh [--which] [IMAGE]
#   --which   print the builder that would be used (podman|buildah|docker|none)
# The version (from git tags, setuptools-scm) is passed to the build, where
# the sources have no .git, and tags the image (OCI tags have no '+').
set -euo pipefail
cd "$(dirname "$0")/.."

builder() {
    if command -v podman >/dev/null 2>&1; then echo podman
    elif command -v buildah >/dev/null 2>&1; then echo buildah
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker
    else echo none
    fi
}

which_builder=$(builder)
if [ "${1:-}" = "--which" ]; then
    echo "$which_builder"
    exit 0
fi
if [ "$which_builder" = none ]; then
    why="no podman or buildah"
    if command -v docker >/dev/null 2>&1; then why="$why, and docker has no engine to talk to"; fi
    echo "make image: skipped: no OCI image builder here ($why)."
    echo "Install podman or buildah, or start a Docker engine, to build the image."
    exit 0
fi

PY=${PY:-.venv/bin/python}
version=$("$PY" -m setuptools_scm 2>/dev/null || echo 0+unknown)
image=${1:-lbaffd:${version//+/-}}
echo "building $image (lbaffd $version) with $which_builder"
case "$which_builder" in
    podman|docker) "$which_builder" build --build-arg "LBAFFD_VERSION=$version" -t "$image" . ;;
    buildah) buildah bud --build-arg "LBAFFD_VERSION=$version" -t "$image" . ;;
esac
