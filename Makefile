# cimg: make (build), make demo (the main job), make test (everything).
# Both demo and test install the Debian packages they need (as root).

export PATH := $(PATH):/usr/local/go/bin
export CGO_ENABLED := 0
GO ?= go
GOFLAGS_BUILD := -trimpath -ldflags "-s -w"

TOOLS := bin/cimg-build bin/cimg-run bin/cimg-fetch bin/cimg-oci
TEST_DEPS := mksquashfs:squashfs-tools unsquashfs:squashfs-tools veritysetup:cryptsetup-bin \
	gcc:gcc curl:curl sqlite3:sqlite3 python3.11:python3.11 \
	arm-linux-gnueabihf-gcc:crossbuild-essential-armhf aarch64-linux-gnu-gcc:crossbuild-essential-arm64 \
	qemu-arm-static:qemu-user-static update-binfmts:binfmt-support \
	qemu-system-x86_64:qemu-system-x86 dpkg:busybox-static setcap:libcap2-bin \
	systemd-nspawn:systemd-container debootstrap:debootstrap tmux:tmux \
	docker-registry:docker-registry /usr/bin/time:time podman:podman conmon:conmon script:bsdutils
BENCH_DEPS := skopeo:skopeo python3:python3 mksquashfs:squashfs-tools unsquashfs:squashfs-tools gcc:gcc curl:curl python3.11:python3.11 \
	/usr/bin/time:time crun:crun runc:runc umoci:umoci debootstrap:debootstrap gnuplot:gnuplot-nox zstd:zstd \
	docker-registry:docker-registry openssl:openssl

.PHONY: all build clibs cross demo test test-short fuzz bench bench-build clean deps-test seccomp yocto-check

all: build

build: $(TOOLS)

bin/%: FORCE
	$(GO) build $(GOFLAGS_BUILD) -tags '$(GOTAGS)' -o $@ ./cmd/$*

# cimg-build alone links C: the reference encoders mksquashfs uses (for
# gzip libdeflate, which beats zlib in time and size), so its images are as
# small as mksquashfs's. libzstd's source is bundled by
# github.com/DataDog/zstd (pinned in go.sum); liblzma, libdeflate and liblz4 are built
# static by scripts/clibs.sh from Debian 12's upstream sources, pinned by
# SHA-256, into .clibs, and linked with the cimg_clibs tag. Never the
# host's libraries: the same source writes the same bytes on every host.
# -O3 is libzstd's own build's setting (the bytes are the same; about 3 %
# faster than cgo's -O2). cimg-build still builds and works with
# CGO_ENABLED=0 or without the tag, on pure-Go encoders that the image's
# provenance names. cimg-run and cimg-fetch stay pure Go and static.
bin/cimg-build: export CGO_ENABLED := 1
bin/cimg-build: export CGO_CFLAGS := -O3
bin/cimg-build: GOTAGS := cimg_clibs
bin/cimg-build: clibs

clibs:
	@scripts/deps.sh curl:curl gcc:gcc make:make xz:xz-utils bzip2:bzip2
	@scripts/clibs.sh .clibs

# The device binaries: static cimg-run (and cimg-build) for ARM targets.
cross:
	GOARCH=arm64 $(GO) build $(GOFLAGS_BUILD) -o bin/arm64/cimg-run ./cmd/cimg-run
	GOARCH=arm GOARM=7 $(GO) build $(GOFLAGS_BUILD) -o bin/armhf/cimg-run ./cmd/cimg-run

bin/hello: FORCE
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./testdata/demo/hello

FORCE:

# The default seccomp profile, compiled ahead of time for each arch the
# launcher ships for (internal/seccompgen): the native table directly,
# the ARM ones by running the generator under qemu-user.
seccomp:
	@scripts/deps.sh qemu-arm-static:qemu-user-static
	$(GO) run ./internal/seccompgen/gen > launcher/zseccomp_amd64.go
	GOARCH=arm64 $(GO) build -o bin/seccompgen-arm64 ./internal/seccompgen/gen
	qemu-aarch64-static bin/seccompgen-arm64 > launcher/zseccomp_arm64.go
	GOARCH=arm GOARM=7 $(GO) build -o bin/seccompgen-arm ./internal/seccompgen/gen
	qemu-arm-static bin/seccompgen-arm > launcher/zseccomp_arm.go

deps-test:
	@scripts/deps.sh $(TEST_DEPS)
	@scripts/vm-kernel.sh

# The main job: build the demo image from testdata, sign it, show it,
# verify it, and list what is inside.
demo: build bin/hello deps-test
	@test -f bin/demo.key || bin/cimg-build keygen bin/demo
	SOURCE_DATE_EPOCH=1700000000 bin/cimg-build -f testdata/demo/cimg.toml --sign bin/demo.key -o bin/hello.cimg
	bin/cimg-build inspect --files bin/hello.cimg
	bin/cimg-build verify --key bin/demo.pub bin/hello.cimg
	@echo "--- the image is a plain squashfs: unsquashfs lists it"
	unsquashfs -lln bin/hello.cimg
	@echo "--- and cimg-run runs it: verified, mounted, isolated (state and store of the demo's own, under bin/)"
	@mkdir -p -m 0700 bin/demo-state
	bin/cimg-run --state-dir bin/demo-state --key bin/demo.pub bin/hello.cimg
	bin/cimg-run --state-dir bin/demo-state --key bin/demo.pub bin/hello.cimg -- from the command line
	@echo "--- installed on the device: the store, a named instance, ps, logs"
	bin/cimg-run install --store bin/demo-store --state-dir bin/demo-state --key bin/demo.pub bin/hello.cimg
	bin/cimg-run run -d --store bin/demo-store --state-dir bin/demo-state --key bin/demo.pub hello
	@sleep 0.3
	bin/cimg-run ps -a --state-dir bin/demo-state
	bin/cimg-run logs --state-dir bin/demo-state hello
	@echo "--- and gone again: removed, its image and cache mount collected"
	bin/cimg-run rm --state-dir bin/demo-state hello
	bin/cimg-run remove --store bin/demo-store --state-dir bin/demo-state hello
	bin/cimg-run gc --store bin/demo-store --state-dir bin/demo-state

# Every test, the slow tier (a > 4 GiB image) included. Needs root: the
# tests mount images on real loop devices. Then scripts/leakcheck.sh
# fails the run if the tests left a mount, loop device, cgroup, process
# or dm target behind (compared with a snapshot taken before them); a
# failed go test still fails make. The C encoders' golden tests need cgo
# and the tag, which the main run (pure Go, as cimg-run ships) has not;
# the BCJ trial and the metadata test run with both builds' encoders.
test: deps-test clibs
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) vet -tags cimg_clibs ./internal/squashfs ./cmd/cimg-build
	@mkdir -p bin && scripts/leakcheck.sh snapshot bin/leakcheck.before
	status=0; $(GO) test -tags slow -count=1 -timeout 40m ./... || status=$$?; \
	CGO_ENABLED=1 CGO_CFLAGS=-O3 $(GO) test -tags cimg_clibs -count=1 -run 'Golden|BCJTrial|MetadataCompressed' ./internal/squashfs || status=1; \
	scripts/fuzz.sh || status=1; \
	scripts/leakcheck.sh check bin/leakcheck.before || status=1; exit $$status

# The fast tests only (no > 4 GiB image).
test-short: deps-test
	$(GO) test -count=1 ./...

# Every fuzz target, $(FUZZTIME) each (make test runs them for 30s).
fuzz:
	FUZZTIME=$${FUZZTIME:-5m} FUZZ_ENFORCE_RATE=1 scripts/fuzz.sh

# Every benchmark against the peers (crun, runc, umoci, mksquashfs, a
# Debian image): raw CSVs in bench/results, then BENCHMARKS.md and charts.
bench: build
	@scripts/deps.sh $(BENCH_DEPS)
	scripts/bench.sh

# Build time, size and memory against mksquashfs and umoci only.
bench-build: build
	@scripts/deps.sh $(BENCH_DEPS)
	scripts/bench-build.sh

# The Yocto layer (yocto/meta-cimg) checked with real bitbake and
# openembedded-core, offline: make yocto-check OECORE=DIR BITBAKE=DIR
# (trees of oe-core wrynose and bitbake 2.18; run as root, bitbake runs
# as an unprivileged user).
yocto-check:
	scripts/yocto-check.sh "$(OECORE)" "$(BITBAKE)"

clean:
	rm -rf bin
