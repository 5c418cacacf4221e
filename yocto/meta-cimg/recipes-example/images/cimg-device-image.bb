SUMMARY = "A device image that ships hello-cimg as a .cimg app, started at boot"
DESCRIPTION = "core-image-minimal plus cimg-run, with hello-cimg in the \
factory directory: installed into the store and started as \
cimg-hello-cimg.service at first boot (cimg-apps.bbclass)."
LICENSE = "MIT"

inherit core-image cimg-apps

# The apps are started by systemd units.
inherit features_check
REQUIRED_DISTRO_FEATURES = "systemd"

CIMG_APPS = "hello-cimg:autostart"

IMAGE_INSTALL = "packagegroup-core-boot ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_LINGUAS = " "
