# cimg.bbclass: pack a recipe's installed program as a .cimg image.
#
#   inherit cimg
#
# After do_install, do_cimg_pack packs the program ${D}${CIMG_BINARY} with
# its shared-library closure, resolved by cimg-build against the recipe's
# target sysroot (--sysroot ${RECIPE_SYSROOT}: the libraries of the
# recipes in DEPENDS, as the program was linked against them), plus the
# files CIMG_ADD names, with a manifest (cimg-base.bbclass: a cimg.toml in
# SRC_URI, or one written from the CIMG_* variables), SOURCE_DATE_EPOCH as
# every timestamp, and optional signatures (CIMG_SIGNING_KEY). It then
# writes a provenance and license record of the image: the recipe and,
# for every file the image took from the sysroot, the recipe that staged
# it and that recipe's LICENSE (lib/cimg/provenance.py). do_cimg_deploy
# puts the image and the record in DEPLOY_DIR_IMAGE:
#
#   ${CIMG_FILE}                     the image
#   ${CIMG_FILE}.provenance.json     the record
#   ${PN}.cimg, ${PN}.cimg.provenance.json   links to them (what
#                                    cimg-apps.bbclass ships)
#
# The command line of do_cimg_pack is checked by the cimg repository's
# tests (yocto/yocto_test.go runs this very function against a cross
# sysroot and runs the result), so keep the cimg-build invocation in it.

inherit cimg-base

# The program: a path the recipe installs, packed as /usr/bin/BASENAME.
CIMG_BINARY ?= "${bindir}/${PN}"
CIMG_COMMAND ?= "/usr/bin/${@os.path.basename(d.getVar('CIMG_BINARY'))}"
# More paths the recipe installs (files or directories), packed at the
# same paths; the libraries their ELF files need come too.
CIMG_ADD ?= ""
# Libraries the program dlopen()s (a SONAME or a path in the sysroot).
CIMG_LIBS ?= ""
# Where the libraries come from.
CIMG_SYSROOT ?= "${RECIPE_SYSROOT}"

CIMG_FILE ?= "${CIMG_NAME}-${CIMG_VERSION}-${TUNE_PKGARCH}.cimg"
CIMG_OUTDIR = "${WORKDIR}/cimg"
CIMG_DEPLOYDIR = "${WORKDIR}/deploy-cimg"

DEPENDS:append:class-target = " cimg-build-native"

# do_cimg_pack: cimg-build, run from ${WORKDIR} with the inputs named by
# paths relative to it, so that the image (whose /.cimg/provenance.json
# names each file's source) does not depend on where TMPDIR is.
do_cimg_pack() {
	manifest="${CIMG_MANIFEST}"
	if [ -z "$manifest" ]; then
		cimg_write_manifest > ${CIMG_OUTDIR}/cimg.toml
		manifest=${CIMG_OUTDIR}/cimg.toml
	fi
	cd ${WORKDIR}
	image=$(realpath -s --relative-to=. ${D})
	set --
	for p in ${CIMG_ADD}; do
		set -- "$@" --add "$image$p:$p"
	done
	for lib in ${CIMG_LIBS}; do
		set -- "$@" --lib "$lib"
	done
	for key in ${CIMG_SIGNING_KEY}; do
		set -- "$@" --sign "$key"
	done
	cimg-build --quiet \
		--manifest "$manifest" \
		--name "${CIMG_NAME}" \
		--version "${CIMG_VERSION}" \
		--sysroot "$(realpath -s --relative-to=. ${CIMG_SYSROOT})" \
		--source-date-epoch "${SOURCE_DATE_EPOCH}" \
		--compression "${CIMG_COMPRESSION}" \
		"$@" ${CIMG_BUILD_EXTRA_ARGS} \
		--output ${CIMG_OUTDIR}/${CIMG_FILE} \
		"$image${CIMG_BINARY}"
	cimg-build inspect --files --json ${CIMG_OUTDIR}/${CIMG_FILE} > ${CIMG_OUTDIR}/${CIMG_FILE}.inspect.json
}
do_cimg_pack[cleandirs] = "${CIMG_OUTDIR}"
do_cimg_pack[postfuncs] += "cimg_provenance"
# The licenses of every recipe the image can draw files from.
do_cimg_pack[recrdeptask] += "do_populate_lic"
addtask cimg_pack after do_install before do_build

# cimg_provenance: the record of where each file of the image came from,
# and under which license (lib/cimg/provenance.py).
python cimg_provenance() {
    import json
    import cimg.provenance

    outdir = d.getVar('CIMG_OUTDIR')
    name = d.getVar('CIMG_FILE')
    with open(os.path.join(outdir, name + '.inspect.json')) as f:
        inspect = json.load(f)
    recipe = {k.lower(): d.getVar(k) for k in ('PN', 'PV', 'PR', 'LICENSE', 'HOMEPAGE')}
    recipe['layer'] = d.getVar('FILE_LAYERNAME')
    rec = cimg.provenance.record(
        inspect,
        workdir=d.getVar('WORKDIR'),
        image_dir=d.getVar('D'),
        installeddeps=d.expand('${RECIPE_SYSROOT_NATIVE}/installeddeps'),
        license_dir=d.getVar('LICENSE_DIRECTORY'),
        recipe=recipe)
    for path in rec['unattributed']:
        bb.warn('%s: %s in %s: no recipe in the sysroot staged it; the record says "unknown"' % (d.getVar('PN'), path, name))
    with open(os.path.join(outdir, name + '.provenance.json'), 'w') as f:
        json.dump(rec, f, indent=1, sort_keys=True)
        f.write('\n')
}

do_cimg_deploy() {
	install -m 0644 ${CIMG_OUTDIR}/${CIMG_FILE} ${CIMG_DEPLOYDIR}/
	install -m 0644 ${CIMG_OUTDIR}/${CIMG_FILE}.provenance.json ${CIMG_DEPLOYDIR}/
	ln -sf ${CIMG_FILE} ${CIMG_DEPLOYDIR}/${PN}.cimg
	ln -sf ${CIMG_FILE}.provenance.json ${CIMG_DEPLOYDIR}/${PN}.cimg.provenance.json
}
SSTATETASKS += "do_cimg_deploy"
do_cimg_deploy[dirs] = "${CIMG_DEPLOYDIR}"
do_cimg_deploy[cleandirs] = "${CIMG_DEPLOYDIR}"
do_cimg_deploy[sstate-inputdirs] = "${CIMG_DEPLOYDIR}"
do_cimg_deploy[sstate-outputdirs] = "${DEPLOY_DIR_IMAGE}"
do_cimg_deploy[stamp-extra-info] = "${MACHINE_ARCH}"
python do_cimg_deploy_setscene () {
    sstate_setscene(d)
}
addtask do_cimg_deploy_setscene
addtask cimg_deploy after do_cimg_pack before do_build
