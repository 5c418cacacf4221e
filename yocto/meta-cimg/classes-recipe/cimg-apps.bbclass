# cimg-apps.bbclass: ship recipes' .cimg apps in a device image.
#
#   inherit cimg-apps
#   CIMG_APPS = "hello-cimg:autostart other-app"
#
# Each word is RECIPE[:autostart], a recipe that inherits cimg.bbclass.
# do_rootfs waits for its do_cimg_deploy, and the rootfs gets:
#
#   ${CIMG_FACTORY_DIR}/NAME.cimg       the app as built (NAME: its manifest's
#                                       name), the version `cimg-run reset`
#                                       reinstalls
#   ${CIMG_FACTORY_DIR}/NAME.provenance.json   its provenance and licenses
#   ${sysconfdir}/cimg/factory-apps     "NAME install|autostart" per app
#
# plus cimg-run and its cimg-factory.service: at first boot that installs
# each app into the store (/var/lib/cimg/store), checking it as every
# install does (hash tree, signatures by /etc/cimg/keys/*.pub, arch,
# grants), writes cimg-NAME.service for each autostart app with
# `cimg-run unit --enable` and starts it. The install runs on the device,
# not at rootfs time, because the store's install verifies and admits the
# image with the device's own cimg-run and keys, for the device's arch.
#
# The libraries inside the apps are not packages of the image: the image's
# license manifest does not see them. ${IMGDEPLOYDIR}/${IMAGE_NAME}.cimg-apps.licenses
# lists, for every shipped app, the recipes and licenses it draws from.

CIMG_APPS ?= ""
CIMG_FACTORY_DIR ?= "${datadir}/cimg/factory"

IMAGE_INSTALL:append = "${@' cimg-run' if d.getVar('CIMG_APPS').split() else ''}"

python __anonymous() {
    for word in (d.getVar('CIMG_APPS') or '').split():
        recipe, _, mode = word.partition(':')
        if mode not in ('', 'autostart'):
            bb.fatal('CIMG_APPS: %s: want RECIPE or RECIPE:autostart' % word)
        d.appendVarFlag('do_rootfs', 'depends', ' %s:do_cimg_deploy' % recipe)
}

python cimg_apps_install() {
    import json, shutil
    rootfs = d.getVar('IMAGE_ROOTFS')
    deploy = d.getVar('DEPLOY_DIR_IMAGE')
    factory = rootfs + d.getVar('CIMG_FACTORY_DIR')
    listfile = rootfs + d.expand('${sysconfdir}/cimg/factory-apps')
    bb.utils.mkdirhier(factory)
    bb.utils.mkdirhier(os.path.dirname(listfile))
    lines = ['# Written by cimg-apps.bbclass: the apps cimg-factory.service installs at first boot.']
    licenses = []
    for word in d.getVar('CIMG_APPS').split():
        recipe, _, mode = word.partition(':')
        src = os.path.join(deploy, recipe + '.cimg')
        with open(src + '.provenance.json') as f:
            rec = json.load(f)
        name = rec['image']['name']
        shutil.copyfile(src, os.path.join(factory, name + '.cimg'))
        os.chmod(os.path.join(factory, name + '.cimg'), 0o444)
        shutil.copyfile(src + '.provenance.json', os.path.join(factory, name + '.provenance.json'))
        lines.append('%s %s' % (name, mode or 'install'))
        for pn, info in sorted(rec['recipes'].items()):
            licenses.append('%s %s %s-%s: %s' % (name, pn, info.get('pv', ''), info.get('pr', ''), info.get('license', '')))
    with open(listfile, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    imgdeploy = d.getVar('IMGDEPLOYDIR')
    bb.utils.mkdirhier(imgdeploy)
    with open(os.path.join(imgdeploy, d.getVar('IMAGE_NAME') + '.cimg-apps.licenses'), 'w') as f:
        f.write('# APP RECIPE VERSION: LICENSE, for each recipe a shipped .cimg app draws files from\n')
        f.write('\n'.join(licenses) + '\n')
}
ROOTFS_POSTPROCESS_COMMAND += "${@'cimg_apps_install' if d.getVar('CIMG_APPS').split() else ''}"
