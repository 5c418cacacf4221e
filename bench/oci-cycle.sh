#!/bin/bash
# One bare OCI cycle for scripts/bench-oci.sh: create, start and delete
# --force of one container, with RUNTIME and its state under ROOT.
# Usage: bench/oci-cycle.sh RUNTIME ROOT BUNDLE
set -eu
id=cycle-$$
"$1" --root "$2" create --bundle "$3" "$id" >/dev/null
"$1" --root "$2" start "$id"
"$1" --root "$2" delete --force "$id"
