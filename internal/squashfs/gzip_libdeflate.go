//go:build cgo && cimg_clibs

package squashfs

// #cgo CFLAGS: -I${SRCDIR}/../../.clibs/include
// #cgo LDFLAGS: ${SRCDIR}/../../.clibs/lib/libdeflate.a
// #include <stdint.h>
// #include <libdeflate.h>
// #if LIBDEFLATE_VERSION_MAJOR != 1 || LIBDEFLATE_VERSION_MINOR != 14
// #error "cimg-build's gzip encoder is pinned to libdeflate 1.14: run scripts/clibs.sh"
// #endif
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// With cgo and the cimg_clibs tag (the Makefile's build), gzip blocks are
// zlib streams written by libdeflate 1.14, built from Debian 12's pinned
// source by scripts/clibs.sh and linked statically: the same bytes on
// every host (its CPU-specific code is in the match finder's table
// resets and the checksum; with all of it turned off, the first 60 files
// of the 100 MB tree of scripts/bench-build.sh compressed to the same
// bytes); the #error above refuses any other version.
//
// Why not zlib, which mksquashfs links: zlib's deflate at level 9 is one
// hot loop (longest_match, 91 % of a gzip build) that libdeflate runs
// four times faster, and smaller. On that tree in 128 KiB blocks, one
// core: zlib 1.2.13 -9 took 16.4 s for 39.30 MB, libdeflate -9 3.9 s for
// 38.91 MB; zlib's inflate (the kernel's decoder) reads both at the same
// speed (0.53-0.61 s against 0.50-0.68 s for the whole tree, three runs).

const deflateLibrary = "libdeflate 1.14 (C, pinned Debian 12 source built by scripts/clibs.sh, cgo)"

type deflateEncoder struct {
	c *C.struct_libdeflate_compressor
}

func newGzipEncoder(level int) (encoder, error) {
	c := C.libdeflate_alloc_compressor(C.int(level))
	if c == nil {
		return nil, fmt.Errorf("gzip encoder (libdeflate): no compressor for level %d (out of memory, or a level it lacks)", level)
	}
	e := &deflateEncoder{c: c}
	// Encoders live as long as a build; the compressor goes with them.
	runtime.AddCleanup(e, func(c *C.struct_libdeflate_compressor) { C.libdeflate_free_compressor(c) }, c)
	return e, nil
}

func (e *deflateEncoder) encode(dst, src []byte) ([]byte, error) {
	buf := dst[:cap(dst)]
	// Only a stream smaller than the block is of use: with no more room
	// than that, libdeflate gives up early on one that is not.
	room := min(len(buf), len(src)-1)
	if room <= 0 {
		return nil, nil
	}
	// One block as one zlib stream with a 32 KiB window, what the
	// kernel's squashfs zlib decompressor reads; 0 when it did not fit.
	n := C.libdeflate_zlib_compress(e.c, unsafe.Pointer(&src[0]), C.size_t(len(src)),
		unsafe.Pointer(&buf[0]), C.size_t(room))
	// Until libdeflate has returned, the cleanup must not free it.
	runtime.KeepAlive(e)
	if n == 0 {
		return nil, nil // did not fit: stored uncompressed
	}
	return buf[:n], nil
}

func gzipDescription(level int) string {
	return fmt.Sprintf("gzip level %d, window 15: %s", level, deflateLibrary)
}
