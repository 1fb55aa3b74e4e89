#!/bin/sh
# What the image tests (tests/images) need on the machine: Debian's podman with the runc
# runtime, debootstrap for their local base image (no image registry is reachable) and
# slirp4netns for the serving container's own network; and for Ollama's push and pull
# tests, docker-registry (an OCI distribution registry they run on loopback). Installs the missing ones with
# apt (CI runs as root on a fresh Debian machine); quick when they are all there.
set -eu
PACKAGES="podman runc debootstrap slirp4netns docker-registry"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "the tests need Debian packages:$missing (as root: apt-get install -y$missing)" >&2
    exit 1
fi
echo "installing for the tests:$missing"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$missing >/dev/null
