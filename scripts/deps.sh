#!/bin/sh
# Installs the Debian packages a make target needs, only when missing.
# Usage: scripts/deps.sh COMMAND:PACKAGE ...   (e.g. mksquashfs:squashfs-tools)
#        a COMMAND of "dpkg" checks that PACKAGE itself is installed
set -eu
missing=""
for pair in "$@"; do
	cmd=${pair%%:*}
	pkg=${pair#*:}
	if [ "$cmd" = dpkg ]; then
		dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
		continue
	fi
	command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages:$missing; run as root or: apt-get install$missing" >&2
	exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
