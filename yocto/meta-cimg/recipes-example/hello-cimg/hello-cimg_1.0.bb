SUMMARY = "hello-cimg: a tiny C program packed as a .cimg app"
DESCRIPTION = "The example of meta-cimg: a C program built the usual way, \
packed by cimg.bbclass with its libraries from the recipe sysroot, and \
shipped with autostart by cimg-device-image."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://hello-cimg.c"
S = "${UNPACKDIR}"

inherit cimg

# The manifest, from variables (a file://cimg.toml in SRC_URI would be
# used instead): a service that greets the device every 5 seconds.
CIMG_ARGS = "device"
CIMG_ENV = "HELLO_EVERY=5"
CIMG_MEMORY = "16MiB"
CIMG_PIDS = "8"

do_compile() {
	${CC} ${CFLAGS} ${LDFLAGS} -o hello-cimg ${S}/hello-cimg.c -lm
}

do_install() {
	install -d ${D}${bindir}
	install -m 0755 hello-cimg ${D}${bindir}/hello-cimg
}
