SUMMARY = "cimg-build: pack a program or a root filesystem as a .cimg image"
DESCRIPTION = "cimg-build packs an ELF program with its shared-library closure \
(resolved in pure Go, also from a target sysroot), or a rootfs, into a squashfs \
.cimg image with a TOML manifest, a verity tree and ed25519 signatures. \
cimg-build-native is what cimg.bbclass and image_types_cimg.bbclass run."

require cimg-go.inc

GO_INSTALL = "${GO_IMPORT}/cmd/cimg-build"
CIMG_PROGRAMS = "cimg-build"

BBCLASSEXTEND = "native"
