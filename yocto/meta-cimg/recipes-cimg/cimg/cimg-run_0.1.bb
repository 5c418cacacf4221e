SUMMARY = "cimg-run: run, install and update .cimg apps on the device"
DESCRIPTION = "The device side of cimg: a static, daemonless launcher for .cimg \
images (verity-checked squashfs with a manifest and signatures), the app store \
at /var/lib/cimg, systemd units for apps, and cimg-fetch, its download helper."

require cimg-go.inc

# GOARCH (and GOARM for 32-bit ARM) come from the machine's tune through
# goarch.bbclass: TARGET_GOARCH, TARGET_GOARM.
GO_INSTALL = "${GO_IMPORT}/cmd/cimg-run ${GO_IMPORT}/cmd/cimg-fetch"
CIMG_PROGRAMS = "cimg-run cimg-fetch"

SRC_URI += " \
    file://cimg-boot.service \
    file://cimg-factory.service \
    file://cimg-factory-install \
"

inherit systemd

SYSTEMD_SERVICE:${PN} = "cimg-boot.service cimg-factory.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
	# Trusted public keys: install signs with cimg-build keygen's NAME.pub
	# here (a bbappend of this recipe, or the image, adds them).
	install -d -m 0755 ${D}${sysconfdir}/cimg/keys
	# The store and the factory images (cimg-apps.bbclass fills the latter).
	install -d -m 0700 ${D}${localstatedir}/lib/cimg
	install -d -m 0755 ${D}${datadir}/cimg/factory
	install -d ${D}${libexecdir}/cimg
	install -m 0755 ${UNPACKDIR}/cimg-factory-install ${D}${libexecdir}/cimg/
	sed -i -e 's,@BINDIR@,${bindir},g' -e 's,@DATADIR@,${datadir},g' \
		-e 's,@SYSCONFDIR@,${sysconfdir},g' -e 's,@LOCALSTATEDIR@,${localstatedir},g' \
		${D}${libexecdir}/cimg/cimg-factory-install
	if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
		install -d ${D}${systemd_system_unitdir}
		for unit in cimg-boot.service cimg-factory.service; do
			sed -e 's,@BINDIR@,${bindir},g' -e 's,@LIBEXECDIR@,${libexecdir},g' \
				-e 's,@SYSCONFDIR@,${sysconfdir},g' -e 's,@LOCALSTATEDIR@,${localstatedir},g' \
				${UNPACKDIR}/$unit > ${D}${systemd_system_unitdir}/$unit
			chmod 0644 ${D}${systemd_system_unitdir}/$unit
		done
	fi
}

FILES:${PN} += "${sysconfdir}/cimg ${localstatedir}/lib/cimg ${datadir}/cimg ${libexecdir}/cimg"

# What cimg-run uses at run time: mounts of squashfs images on loop
# devices, dm-verity, namespaces and cgroups (cimg-run doctor lists them).
RRECOMMENDS:${PN} += "kernel-module-squashfs kernel-module-loop kernel-module-dm-verity"
