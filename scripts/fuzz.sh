#!/usr/bin/env bash
# Runs every fuzz target for $FUZZTIME (default 30s) one after another,
# with -parallel 2, prints each one's execs/s, and fails if a target
# fails (a crash or a broken invariant: go writes the input to the
# package's testdata/fuzz/FuzzX/, which is wanted). A target averaging
# under $FUZZ_MIN_RATE (default 1000) execs/s is reported; it fails the
# run only with FUZZ_ENFORCE_RATE=1 (make fuzz): in make test a timing
# must not decide pass or fail — the same target measured 1,187 and
# 3,217 execs/s in two runs on this machine. Go's fuzz cache goes to a
# temporary directory removed on exit, so each run starts from the
# committed seeds and nothing is left outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=0
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
MIN_RATE=${FUZZ_MIN_RATE:-1000}
ENFORCE_RATE=${FUZZ_ENFORCE_RATE:-0}
slow=()

# package target, in the order they run
TARGETS=(
	"./format FuzzOpen"
	"./format FuzzParseFooter"
	"./manifest FuzzParse"
	"./internal/elfdeps FuzzRead"
	"./internal/elfdeps FuzzParseCache"
	"./internal/warmup FuzzReadDyn"
	"./build FuzzFlattenOCI"
)

work=$(mktemp -d "${TMPDIR:-/tmp}/cimg-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
printf '%-34s %12s %10s %s\n' target execs execs/s result
for t in "${TARGETS[@]}"; do
	read -r pkg name <<<"$t"
	log="$work/$name.log"
	status=ok
	for try in 1 2; do
		if "$GO" test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -parallel 2 "$pkg" \
			-args -test.fuzzcachedir="$work/cache" >"$log" 2>&1; then
			status=ok
			break
		fi
		status=FAILED
		# Go's fuzz coordinator (go1.26) can report its own -fuzztime
		# deadline as a failure (golang/go#75804, fixed in go1.27): a bare
		# "context deadline exceeded" with no input written and no panic.
		# That, and only that, is run once more; anything else fails now.
		if ! grep -q 'context deadline exceeded' "$log" ||
			grep -qE 'Failing input written|panic:|_test.go:[0-9]+:' "$log"; then
			break
		fi
		echo "$pkg $name: go's fuzz deadline race (golang/go#75804), no input written: running it again" >&2
	done
	# The last progress line: "fuzz: elapsed: 30s, execs: 123456 (4115/sec), ...".
	# Its (N/sec) is the last 3 s only; the average is execs over elapsed.
	last=$(grep -E '^fuzz: elapsed: .*execs: [0-9]+' "$log" | tail -n 1 || true)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	elapsed=$(sed -nE 's/^fuzz: elapsed: ([0-9hms.]+),.*/\1/p' <<<"$last")
	secs=$(awk -v d="$elapsed" 'BEGIN { s = 0; n = d
		if (match(n, /[0-9]+h/)) { s += 3600 * substr(n, RSTART, RLENGTH - 1) }
		if (match(n, /[0-9]+m/)) { s += 60 * substr(n, RSTART, RLENGTH - 1) }
		if (match(n, /[0-9.]+s/)) { s += substr(n, RSTART, RLENGTH - 1) }
		print s }')
	rate=0
	if [[ -n "$execs" ]] && awk -v s="$secs" 'BEGIN { exit !(s > 0) }'; then
		rate=$(awk -v e="$execs" -v s="$secs" 'BEGIN { printf "%d", e / s }')
	fi
	if [[ $status == ok && $rate -lt $MIN_RATE ]]; then
		slow+=("$name")
		if [[ $ENFORCE_RATE == 1 ]]; then
			status="SLOW (under $MIN_RATE/s)"
		else
			status="ok (slow: under $MIN_RATE/s)"
		fi
	fi
	printf '%-34s %12s %10s %s\n' "$pkg $name" "${execs:-?}" "$rate" "$status"
	if [[ $status != ok* ]]; then
		failed+=("$name")
		grep -vE '^fuzz: elapsed' "$log" | tail -n 25 | sed 's/^/    /'
	fi
done
if ((${#failed[@]})); then
	echo "fuzz: failed: ${failed[*]}" >&2
	exit 1
fi
if ((${#slow[@]})); then
	echo "fuzz: all ${#TARGETS[@]} targets ran $FUZZTIME each; under $MIN_RATE execs/s this time: ${slow[*]}"
else
	echo "fuzz: all ${#TARGETS[@]} targets ran $FUZZTIME each at ≥ $MIN_RATE execs/s"
fi
