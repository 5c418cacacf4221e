//go:build cgo && cimg_clibs

package squashfs

// #cgo CFLAGS: -I${SRCDIR}/../../.clibs/include
// #cgo LDFLAGS: ${SRCDIR}/../../.clibs/lib/libz.a
// #include <stdint.h>
// #include <stdlib.h>
// #include <zlib.h>
// #if ZLIB_VERNUM != 0x12d0
// #error "cimg-build's gzip encoder is pinned to zlib 1.2.13: run scripts/clibs.sh"
// #endif
//
// // The stream is C memory: zlib's state points back at it, and Go memory
// // must not be held by C between calls.
// static z_stream *cimg_gz_new(int level) {
// 	z_stream *s = calloc(1, sizeof *s);
// 	if (!s)
// 		return NULL;
// 	if (deflateInit2(s, level, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
// 		free(s);
// 		return NULL;
// 	}
// 	return s;
// }
//
// // One block as one zlib stream, as mksquashfs's gzip_compress makes it.
// // Z_STREAM_END when it fit in out, else it did not.
// static int cimg_gz(z_stream *s, const uint8_t *in, size_t in_size, uint8_t *out, size_t out_size, size_t *out_len) {
// 	int r = deflateReset(s);
// 	if (r != Z_OK)
// 		return r;
// 	s->next_in = (Bytef *)in;
// 	s->avail_in = in_size;
// 	s->next_out = out;
// 	s->avail_out = out_size;
// 	r = deflate(s, Z_FINISH);
// 	*out_len = s->total_out;
// 	s->next_in = NULL;
// 	s->next_out = NULL;
// 	return r;
// }
//
// static void cimg_gz_free(z_stream *s) {
// 	deflateEnd(s);
// 	free(s);
// }
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// With cgo and the cimg_clibs tag (the Makefile's build), gzip blocks are
// compressed by zlib 1.2.13, the reference encoder mksquashfs links, with
// mksquashfs's settings (window 15, memLevel 8, the default strategy), so
// the images are as small as mksquashfs's. Built from Debian 12's pinned
// source by scripts/clibs.sh and linked statically: the same bytes on
// every host; the #error above refuses any other version.

const zlibLibrary = "zlib 1.2.13 (C, pinned Debian 12 source built by scripts/clibs.sh, cgo)"

type zlibEncoder struct{ s *C.z_stream }

func newGzipEncoder(level int) (encoder, error) {
	s := C.cimg_gz_new(C.int(level))
	if s == nil {
		return nil, fmt.Errorf("gzip encoder (zlib): deflateInit2 at level %d failed", level)
	}
	e := &zlibEncoder{s: s}
	// Encoders live as long as a build; zlib's state goes with them.
	runtime.AddCleanup(e, func(s *C.z_stream) { C.cimg_gz_free(s) }, s)
	return e, nil
}

func (e *zlibEncoder) encode(dst, src []byte) ([]byte, error) {
	buf := dst[:cap(dst)]
	if len(src) == 0 || len(buf) == 0 {
		return nil, nil
	}
	var n C.size_t
	r := C.cimg_gz(e.s, (*C.uint8_t)(unsafe.Pointer(&src[0])), C.size_t(len(src)),
		(*C.uint8_t)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
	// Until deflate has returned, the cleanup must not free the stream.
	runtime.KeepAlive(e)
	switch r {
	case C.Z_STREAM_END:
		if int(n) >= len(src) {
			return nil, nil
		}
		return buf[:n], nil
	case C.Z_OK, C.Z_BUF_ERROR:
		return nil, nil // did not fit: stored uncompressed
	}
	return nil, fmt.Errorf("gzip (zlib): deflate returned %d", int(r))
}

func gzipDescription(level int) string {
	return fmt.Sprintf("gzip level %d, window 15: %s", level, zlibLibrary)
}
