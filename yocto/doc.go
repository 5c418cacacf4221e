// Package yocto holds the tests of the Yocto layer in meta-cimg/: no
// code of its own. They run what the layer's classes run, without
// bitbake (CI has none): the cimg-build command line of cimg.bbclass's
// do_cimg_pack and of image_types_cimg.bbclass's IMAGE_CMD:cimg, taken
// from the class files themselves and expanded as bitbake expands them,
// against a target sysroot shaped like a recipe's (from Debian's
// cross toolchains), and the images they make are run by cimg-run
// under qemu-user. They also check that the Go module list of the tool
// recipes is current and enough to build the tools offline.
//
// scripts/yocto-check.sh checks the layer with real bitbake and
// openembedded-core (make yocto-check).
package yocto
