//go:build cgo

package squashfs

import (
	"fmt"
	"runtime"

	"github.com/DataDog/zstd"
)

// With cgo, zstd blocks are compressed by the reference encoder: libzstd
// 1.5.7 as bundled (C source) by github.com/DataDog/zstd v1.5.7 and
// compiled into cimg-build, never the host's libzstd (the module's
// external_libzstd tag, which would link it, is not used), so the same
// cimg-build source gives the same bytes on every host. It is the encoder
// mksquashfs uses, called the same way (ZSTD_compressCCtx, one call per
// block), so the images are as small as mksquashfs's.

// zstdDefaultLevel is the level when none is given: mksquashfs's default.
const zstdDefaultLevel = 15

const zstdLibrary = "libzstd 1.5.7 (C, bundled by github.com/DataDog/zstd v1.5.7, cgo)"

type zstdEncoder struct {
	ctx   zstd.Ctx
	level int
}

func newZstdEncoder(level int) (encoder, error) {
	if level == 0 {
		level = zstdDefaultLevel
	}
	return &zstdEncoder{ctx: zstd.NewCtx(), level: level}, nil
}

func (e *zstdEncoder) encode(dst, src []byte) ([]byte, error) {
	out, err := e.ctx.CompressLevel(dst[:0], src, e.level)
	// DataDog/zstd v1.5.7 frees a context in a finalizer and does not keep
	// it alive across its C call: an encoder whose last use is this call
	// could lose its context mid-compression (a SIGSEGV in
	// TestZstdCgoGolden, 6 runs in 80, before this line).
	runtime.KeepAlive(e)
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if len(out) >= len(src) {
		return nil, nil
	}
	return out, nil
}

func zstdDescription(level int) string {
	if level == 0 {
		level = zstdDefaultLevel
	}
	return fmt.Sprintf("zstd level %d: %s", level, zstdLibrary)
}
