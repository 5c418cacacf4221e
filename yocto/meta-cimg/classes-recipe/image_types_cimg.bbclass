# image_types_cimg.bbclass: a whole image rootfs as a .cimg file.
#
# In local.conf (or the image recipe):
#
#   IMAGE_CLASSES += "image_types_cimg"
#   IMAGE_FSTYPES += "cimg"
#
# do_image_cimg packs ${IMAGE_ROOTFS} (owners as the rootfs has them,
# under pseudo) with a manifest written from the CIMG_* variables
# (cimg-base.bbclass; CIMG_NAME is the image's basename, CIMG_COMMAND the
# program to run, /bin/sh unless set) or the cimg.toml CIMG_MANIFEST
# names, the rootfs timestamp REPRODUCIBLE_TIMESTAMP_ROOTFS as every
# file's time, and signatures by CIMG_SIGNING_KEY. The result is
# ${IMGDEPLOYDIR}/${IMAGE_NAME}.cimg, linked as ${IMAGE_LINK_NAME}.cimg.

inherit cimg-base

CIMG_NAME ?= "${IMAGE_BASENAME}"
CIMG_VERSION ?= "${@d.getVar('DISTRO_VERSION') or d.getVar('PV')}"
CIMG_COMMAND ?= "/bin/sh"

IMAGE_TYPES += "cimg"

do_image_cimg[depends] += "cimg-build-native:do_populate_sysroot"

IMAGE_CMD:cimg () {
	manifest="${CIMG_MANIFEST}"
	if [ -z "$manifest" ]; then
		manifest=${WORKDIR}/cimg-image.toml
		cimg_write_manifest > $manifest
	fi
	set --
	for key in ${CIMG_SIGNING_KEY}; do
		set -- "$@" --sign "$key"
	done
	cimg-build --quiet \
		--manifest "$manifest" \
		--name "${CIMG_NAME}" \
		--version "${CIMG_VERSION}" \
		--rootfs ${IMAGE_ROOTFS} \
		--keep-owners \
		--source-date-epoch "${REPRODUCIBLE_TIMESTAMP_ROOTFS}" \
		--compression "${CIMG_COMPRESSION}" \
		"$@" ${CIMG_BUILD_EXTRA_ARGS} \
		--output ${IMGDEPLOYDIR}/${IMAGE_NAME}.cimg
}
