//go:build cgo && cimg_clibs

package squashfs

// #cgo CFLAGS: -I${SRCDIR}/../../.clibs/include
// #cgo LDFLAGS: ${SRCDIR}/../../.clibs/lib/liblz4.a
// #include <lz4.h>
// #include <lz4hc.h>
// #if LZ4_VERSION_NUMBER != 10904
// #error "cimg-build's lz4 encoder is pinned to liblz4 1.9.4: run scripts/clibs.sh"
// #endif
import "C"

import (
	"fmt"
	"unsafe"
)

// With cgo and the cimg_clibs tag (the Makefile's build), lz4 blocks are
// compressed by liblz4 1.9.4, as mksquashfs compresses them
// (LZ4_compress_default, or LZ4_compress_HC for a level: mksquashfs's
// -Xhc is level 12), so the images are as small as mksquashfs's. Built
// from Debian 12's pinned source by scripts/clibs.sh and linked
// statically: the same bytes on every host.

const lz4Library = "liblz4 1.9.4 (C, pinned Debian 12 source built by scripts/clibs.sh, cgo)"

type lz4Encoder struct{ level int }

func newLZ4Encoder(level int) encoder { return &lz4Encoder{level: level} }

// encode stops at the output buffer's end (the block is then stored as
// is): liblz4 returns 0 when the output does not fit.
func (e *lz4Encoder) encode(dst, src []byte) ([]byte, error) {
	buf := dst[:cap(dst)]
	if len(src) == 0 || len(buf) == 0 {
		return nil, nil
	}
	in := (*C.char)(unsafe.Pointer(&src[0]))
	out := (*C.char)(unsafe.Pointer(&buf[0]))
	var n C.int
	if e.level > 0 {
		n = C.LZ4_compress_HC(in, out, C.int(len(src)), C.int(len(buf)), C.int(e.level))
	} else {
		n = C.LZ4_compress_default(in, out, C.int(len(src)), C.int(len(buf)))
	}
	if n <= 0 || int(n) >= len(src) {
		return nil, nil
	}
	return buf[:n], nil
}

func lz4Description(level int) string {
	if level > 0 {
		return fmt.Sprintf("lz4 HC level %d: %s", level, lz4Library)
	}
	return "lz4: " + lz4Library
}
