#!/bin/sh
# Mounts a .cimg read-only on a loop device and runs its command in a
# chroot: what cimg-run will do with full isolation, done by hand.
set -eu
img=$1
mnt=$(mktemp -d)
trap 'umount "$mnt" 2>/dev/null; rmdir "$mnt"' EXIT
mount -t squashfs -o loop,ro,nodev,nosuid "$img" "$mnt"
echo "mounted $img on $mnt; running /usr/bin/hello world in a chroot:"
chroot "$mnt" /usr/bin/hello world
