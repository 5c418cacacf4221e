# cimg-base.bbclass: what cimg.bbclass (one program of a recipe) and
# image_types_cimg.bbclass (a whole image rootfs) share: the tool, the
# manifest variables, and the manifest writer.
#
# The manifest of an image is a cimg.toml. Give one in SRC_URI
# (file://cimg.toml; it is used as it is, its [build] table ignored where
# the class passes the same input on the command line), or let the class
# write it from these variables:
#
#   CIMG_NAME          the app's name (default: the recipe's PN)
#   CIMG_VERSION       its version (default: PV)
#   CIMG_COMMAND       the program and its fixed arguments, as paths in the image
#   CIMG_ARGS          default arguments (replaced by those given to cimg-run)
#   CIMG_ENV           "KEY=VALUE ..." set in the app's environment
#   CIMG_WORKDIR       its working directory
#   CIMG_MEMORY        memory limit, like 64MiB
#   CIMG_PIDS          at most this many processes
#   CIMG_CPUS          CPU limit in cores, like 0.5
#   CIMG_CAPABILITIES  capabilities the app keeps, like "NET_BIND_SERVICE"
#   CIMG_NETWORK       none (default: private, loopback only) or host (the
#                      device's operator must grant it at install)
#   CIMG_INIT          "1": a minimal init as PID 1 reaps zombies, forwards signals
#   CIMG_MANIFEST_EXTRA  TOML appended verbatim (mounts, health, ...)
#
# Words are split on spaces: an argument with spaces needs a cimg.toml.

CIMG_NAME ??= "${PN}"
CIMG_VERSION ??= "${PV}"
CIMG_COMMAND ??= ""
CIMG_ARGS ?= ""
CIMG_ENV ?= ""
CIMG_WORKDIR ?= ""
CIMG_MEMORY ?= ""
CIMG_PIDS ?= ""
CIMG_CPUS ?= ""
CIMG_CAPABILITIES ?= ""
CIMG_NETWORK ?= ""
CIMG_INIT ?= ""
CIMG_MANIFEST_EXTRA ?= ""

# The manifest given in SRC_URI, if any (else the class writes one).
CIMG_MANIFEST ??= "${@cimg_manifest_from_src_uri(d)}"

# Build flags: compression (zstd, xz, gzip, lz4) and anything else for
# cimg-build (see cimg-build --help).
CIMG_COMPRESSION ?= "zstd"
CIMG_BUILD_EXTRA_ARGS ?= ""

# Signing: private key files (cimg-build keygen NAME writes NAME.key and
# NAME.pub); each signs the image. Empty: unsigned. Keep keys out of
# layers: point this at a path outside the build's shared state, set in
# local.conf or the CI's environment. The key's content does not go into
# the task's signature; its path does.
CIMG_SIGNING_KEY ?= ""

def cimg_manifest_from_src_uri(d):
    import os
    for uri in (d.getVar('SRC_URI') or '').split():
        path = uri.split(';')[0]
        if path.startswith('file://') and os.path.basename(path) == 'cimg.toml':
            return os.path.join(d.getVar('UNPACKDIR'), path[len('file://'):])
    return ''

# cimg_toml_list WORD...: the words as a TOML array of strings.
cimg_toml_list() {
	sep=""
	for w in "$@"; do
		printf '%s"%s"' "$sep" "$(printf '%s' "$w" | sed 's/[\\"]/\\&/g')"
		sep=", "
	done
}

# cimg_write_manifest: the cimg.toml for the CIMG_* variables, on stdout.
cimg_write_manifest() {
	printf '# Written by cimg-base.bbclass from the CIMG_* variables of %s.\n' "${PN}"
	printf 'name = "%s"\n' "${CIMG_NAME}"
	printf 'version = "%s"\n' "${CIMG_VERSION}"
	printf '\n[app]\n'
	printf 'command = [%s]\n' "$(cimg_toml_list ${CIMG_COMMAND})"
	if [ -n "${CIMG_ARGS}" ]; then
		printf 'args = [%s]\n' "$(cimg_toml_list ${CIMG_ARGS})"
	fi
	if [ -n "${CIMG_WORKDIR}" ]; then
		printf 'workdir = "%s"\n' "${CIMG_WORKDIR}"
	fi
	if [ "${CIMG_INIT}" = "1" ]; then
		printf 'init = true\n'
	fi
	if [ -n "${CIMG_ENV}" ]; then
		printf '\n[app.env]\n'
		for kv in ${CIMG_ENV}; do
			key=$(printf '%s' "$kv" | cut -d= -f1)
			printf '%s = %s\n' "$key" "$(cimg_toml_list "$(printf '%s' "$kv" | cut -d= -f2-)")"
		done
	fi
	if [ -n "${CIMG_MEMORY}${CIMG_PIDS}${CIMG_CPUS}" ]; then
		printf '\n[limits]\n'
		[ -z "${CIMG_MEMORY}" ] || printf 'memory = "%s"\n' "${CIMG_MEMORY}"
		[ -z "${CIMG_PIDS}" ] || printf 'pids = %s\n' "${CIMG_PIDS}"
		[ -z "${CIMG_CPUS}" ] || printf 'cpu = "%s"\n' "${CIMG_CPUS}"
	fi
	if [ -n "${CIMG_CAPABILITIES}" ]; then
		printf '\n[security]\ncapabilities = [%s]\n' "$(cimg_toml_list ${CIMG_CAPABILITIES})"
	fi
	if [ -n "${CIMG_NETWORK}" ]; then
		printf '\n[namespaces]\nnetwork = "%s"\n' "${CIMG_NETWORK}"
	fi
	if [ -n "${CIMG_MANIFEST_EXTRA}" ]; then
		printf '\n%s\n' "${CIMG_MANIFEST_EXTRA}"
	fi
}
