#!/usr/bin/env bash
# Offline test images built from Debian packages (no registry is needed or contacted).
#
# Usage: scripts/images/build-test-images.sh [--force] [rootfs|podman|docker|all]
#
# rootfs  builds the root filesystem folders $GB_SERVICES_DIR/rootfs/busybox and
#         $GB_SERVICES_DIR/rootfs/dcm2niix (also what bubblewrap runs):
#           busybox   Debian's busybox-static as /bin/busybox, one symlink per applet at the
#                     path busybox itself lists (/bin/sh, /bin/cat, /usr/bin/env, ...),
#                     /bin/bash (see below), /etc/passwd + /etc/group, and the empty mount
#                     points /flywheel/v0/{input,output,work}, /tmp, /proc, /sys, /dev.
#           dcm2niix  the busybox tree plus Debian's /usr/bin/dcm2niix and exactly the shared
#                     libraries `ldd` resolves for it (loader included, ld.so.cache rebuilt).
#         /bin/bash is a two-line script running busybox `ash` with the same arguments
#         (busybox-static has no `bash` applet, so a plain symlink would fail with "applet not
#         found"); ash accepts `bash -c 'CMD'`, `bash SCRIPT ARGS`, `set -euo pipefail`,
#         $((...)) and `[[ ]]`, but not bash arrays.
# podman  rootfs, then `podman import` as localhost/gearbroker/busybox:1 and
#         localhost/gearbroker/dcm2niix:1.
# docker  rootfs, then `docker import` of the same names into the engine at DOCKER_HOST.
# all     (default) rootfs + podman when podman is installed + docker when DOCKER_HOST is set.
#
# Idempotent: existing rootfs folders and images are kept unless --force is given. Concurrent
# runs wait for each other (flock on $GB_SERVICES_DIR/.build-test-images.lock).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/services/lib.sh
source "$here/../services/lib.sh"
# shellcheck source=scripts/services/lib_extra.sh
source "$here/../services/lib_extra.sh"

ROOTFS_DIR="$GB_SERVICES_DIR/rootfs"
IMAGES=(busybox dcm2niix)
IMAGE_PREFIX=localhost/gearbroker
IMAGE_TAG=1
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
FORCE=0
ROOTFS_DONE=0

image_ref() {
    echo "$IMAGE_PREFIX/$1:$IMAGE_TAG"
}

build_busybox_rootfs() {
    local root="$1" applet
    mkdir -p "$root/bin"
    cp /bin/busybox "$root/bin/busybox"
    while read -r applet; do
        [[ -e "$root/$applet" || -L "$root/$applet" ]] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -s /bin/busybox "$root/$applet"
    done < <("$root/bin/busybox" --list-full)
    [[ -L "$root/bin/ash" ]] || gb_die "busybox has no ash applet"
    printf '#!/bin/ash\nexec /bin/ash "$@"\n' >"$root/bin/bash"
    chmod 755 "$root/bin/bash"
    mkdir -p "$root"/{etc,root,proc,sys,dev,run,tmp,var/tmp} "$root"/flywheel/v0/{input,output,work}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
}

copy_with_parents() {
    local src="$1" root="$2"
    mkdir -p "$root/$(dirname "$src")"
    cp -L "$src" "$root/$src"
}

build_dcm2niix_rootfs() {
    local root="$1" lib
    cp -a "$ROOTFS_DIR/busybox/." "$root/"
    copy_with_parents /usr/bin/dcm2niix "$root"
    # `ldd` lines: "libX.so => /path (0x..)" and "/lib64/ld-linux-x86-64.so.2 (0x..)".
    while read -r lib; do
        copy_with_parents "$lib" "$root"
    done < <(ldd /usr/bin/dcm2niix | grep -o '/[^ ]*' | sort -u)
    printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"$root/etc/ld.so.conf"
    ldconfig -r "$root"
    chroot "$root" /usr/bin/dcm2niix -h >/dev/null || gb_die "dcm2niix does not run inside $root"
}

build_rootfs() {
    local name tmp
    ((ROOTFS_DONE)) && return 0
    ROOTFS_DONE=1
    apt_install busybox-static dcm2niix bubblewrap
    mkdir -p "$ROOTFS_DIR"
    for name in "${IMAGES[@]}"; do
        if [[ -d "$ROOTFS_DIR/$name" && "$FORCE" == 0 ]]; then
            continue
        fi
        gb_log "building rootfs $ROOTFS_DIR/$name"
        tmp="$(mktemp -d "$ROOTFS_DIR/.$name.XXXXXX")"
        chmod 755 "$tmp"
        "build_${name}_rootfs" "$tmp"
        rm -rf "${ROOTFS_DIR:?}/$name"
        mv "$tmp" "$ROOTFS_DIR/$name"
    done
}

# import_images CLI... : import every rootfs into the engine run by CLI (podman or docker argv).
import_images() {
    local name ref quiet=()
    [[ "$(basename "$1")" == podman ]] && quiet=(--quiet)
    for name in "${IMAGES[@]}"; do
        ref="$(image_ref "$name")"
        if "$@" image inspect "$ref" >/dev/null 2>&1; then
            [[ "$FORCE" == 0 ]] && continue
            "$@" rmi "$ref" >/dev/null 2>&1 || true
        fi
        gb_log "importing $ref into $1"
        tar -C "$ROOTFS_DIR/$name" -c . |
            "$@" import "${quiet[@]}" --change "ENV PATH=$IMAGE_PATH" --change 'CMD ["/bin/sh"]' - "$ref" \
                >/dev/null
    done
}

build_podman() {
    command -v podman >/dev/null || gb_die "podman not installed: run scripts/services/podman.sh start"
    build_rootfs
    import_images podman
}

build_docker() {
    local cli
    [[ -n "${DOCKER_HOST:-}" ]] ||
        gb_die "DOCKER_HOST is not set: run scripts/services/docker.sh start and source docker.env"
    cli="$(docker_cli)"
    "$cli" info >/dev/null 2>&1 || gb_die "no Docker engine answers at $DOCKER_HOST"
    build_rootfs
    import_images "$cli"
}

build_all() {
    build_rootfs
    if command -v podman >/dev/null; then build_podman; fi
    if [[ -n "${DOCKER_HOST:-}" ]]; then build_docker; fi
}

# One build at a time (parallel test workers may all ask for the images).
mkdir -p "$GB_SERVICES_DIR"
exec 9>"$GB_SERVICES_DIR/.build-test-images.lock"
flock 9

if [[ "${1:-}" == --force ]]; then
    FORCE=1
    shift
fi
case "${1:-all}" in
    rootfs) build_rootfs ;;
    podman) build_podman ;;
    docker) build_docker ;;
    all) build_all ;;
    *)
        echo "usage: $0 [--force] [rootfs|podman|docker|all]" >&2
        exit 2
        ;;
esac
