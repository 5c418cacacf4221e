//go:build cgo && cimg_clibs

package squashfs

// #cgo CFLAGS: -I${SRCDIR}/../../.clibs/include
// #cgo LDFLAGS: ${SRCDIR}/../../.clibs/lib/liblzma.a
// #include <lzma.h>
// #if LZMA_VERSION != 50040012
// #error "cimg-build's xz encoder is pinned to liblzma 5.4.1: run scripts/clibs.sh"
// #endif
//
// // One block as one xz stream, as mksquashfs's xz_compress makes it:
// // the preset's LZMA2 options with the dictionary set, after an optional
// // BCJ filter, a CRC32 check; LZMA_BUF_ERROR when it does not fit.
// static int cimg_xz(uint32_t preset, uint32_t dict, uint64_t bcj,
// 		const uint8_t *in, size_t in_size, uint8_t *out, size_t out_size, size_t *out_pos) {
// 	lzma_options_lzma opt;
// 	lzma_filter f[3];
// 	int n = 0;
// 	if (lzma_lzma_preset(&opt, preset))
// 		return LZMA_OPTIONS_ERROR;
// 	opt.dict_size = dict;
// 	if (bcj) {
// 		f[n].id = bcj;
// 		f[n].options = NULL;
// 		n++;
// 	}
// 	f[n].id = LZMA_FILTER_LZMA2;
// 	f[n].options = &opt;
// 	n++;
// 	f[n].id = LZMA_VLI_UNKNOWN;
// 	f[n].options = NULL;
// 	*out_pos = 0;
// 	return lzma_stream_buffer_encode(f, LZMA_CHECK_CRC32, NULL, in, in_size, out, out_pos, out_size);
// }
import "C"

import (
	"fmt"
	"unsafe"
)

// With cgo and the cimg_clibs tag (the Makefile's build), xz blocks are
// compressed by liblzma 5.4.1, the reference encoder mksquashfs links,
// called as mksquashfs calls it (lzma_stream_buffer_encode per block), so
// the images are as small as mksquashfs's. The library is built from
// Debian 12's pinned upstream source by scripts/clibs.sh and linked
// statically, never the host's, so the same cimg-build source gives the
// same bytes on every host; the #error above refuses any other version.

// xzDefaultLevel is liblzma's default preset, mksquashfs's.
const xzDefaultLevel = 6

const xzLibrary = "liblzma 5.4.1 (C, pinned Debian 12 source built by scripts/clibs.sh, cgo)"

type xzEncoder struct {
	preset uint32
	dict   uint32
	bcj    BCJ
	trial  *bcjTrial // nil without a filter
}

func newXZEncoder(level, blockSize int, bcj BCJ) (encoder, error) {
	if level == 0 {
		level = xzDefaultLevel
	}
	switch bcj {
	case BCJNone, BCJX86, BCJARM, BCJARMThumb, BCJARM64:
	default:
		return nil, fmt.Errorf("xz BCJ filter %v is not supported", bcj)
	}
	e := &xzEncoder{preset: uint32(level), dict: uint32(xzDict(blockSize)), bcj: bcj}
	if bcj != BCJNone {
		e.trial = newBCJTrial(bcj)
	}
	return e, nil
}

// encode compresses src once: with the filter where the trial says it
// pays, else without (see bcjTrial).
func (e *xzEncoder) encode(dst, src []byte) ([]byte, error) {
	bcj, err := e.trial.filterFor(src)
	if err != nil {
		return nil, err
	}
	out, err := e.stream(dst[:cap(dst)], src, bcj)
	if err != nil {
		return nil, err
	}
	if out == nil || len(out) >= len(src) {
		return nil, nil
	}
	return out, nil
}

// stream writes one xz stream of src into buf and returns it, or nil
// when it does not fit in buf.
func (e *xzEncoder) stream(buf, src []byte, bcj BCJ) ([]byte, error) {
	if len(src) == 0 || len(buf) == 0 {
		return nil, nil
	}
	var n C.size_t
	ret := C.cimg_xz(C.uint32_t(e.preset), C.uint32_t(e.dict), C.uint64_t(bcj.filterID()),
		(*C.uint8_t)(unsafe.Pointer(&src[0])), C.size_t(len(src)),
		(*C.uint8_t)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
	switch ret {
	case C.LZMA_OK:
		return buf[:n], nil
	case C.LZMA_BUF_ERROR:
		return nil, nil
	case C.LZMA_MEM_ERROR:
		return nil, fmt.Errorf("xz (liblzma): out of memory")
	}
	return nil, fmt.Errorf("xz (liblzma): lzma_stream_buffer_encode returned %d", int(ret))
}

func xzDescription(level, blockSize int, bcj BCJ) string {
	if level == 0 {
		level = xzDefaultLevel
	}
	return fmt.Sprintf("xz preset %d, dictionary %d, BCJ %v where an lz4 trial finds it pays: %s",
		level, xzDict(blockSize), bcj, xzLibrary)
}
