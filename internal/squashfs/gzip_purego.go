//go:build !(cgo && cimg_clibs)

package squashfs

import (
	"bytes"
	"fmt"

	"github.com/klauspost/compress/zlib"
)

// Without the C encoder (see gzip_libdeflate.go), gzip blocks are zlib
// streams written by github.com/klauspost/compress in pure Go: valid
// images, about 3.5 % larger than zlib's at level 9.

func newGzipEncoder(level int) (encoder, error) {
	w, err := zlib.NewWriterLevel(nil, level)
	if err != nil {
		return nil, fmt.Errorf("gzip encoder: %w", err)
	}
	return &zlibEncoder{w: w}, nil
}

func gzipDescription(level int) string {
	return fmt.Sprintf("gzip level %d: github.com/klauspost/compress/zlib (pure Go)", level)
}

type zlibEncoder struct {
	w *zlib.Writer
}

func (e *zlibEncoder) encode(dst, src []byte) ([]byte, error) {
	buf := bytes.NewBuffer(dst[:0])
	e.w.Reset(buf)
	if _, err := e.w.Write(src); err != nil {
		return nil, err
	}
	if err := e.w.Close(); err != nil {
		return nil, err
	}
	if buf.Len() >= len(src) {
		return nil, nil
	}
	return buf.Bytes(), nil
}
