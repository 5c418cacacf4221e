package vmtest

import (
	"fmt"
	"io"
	"os"
	"path"
	"sort"
)

// writeInitramfs writes a cpio "newc" archive — the format the kernel
// unpacks as initramfs — with /init and the given files (and the
// directories they need), all root-owned.
func writeInitramfs(out string, files map[string]string, init string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	ino := 1
	entry := func(name string, mode uint32, data []byte) error {
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		ino++
		pad := func(n int) []byte { return make([]byte, (4-n%4)%4) }
		b := append([]byte(hdr), name...)
		b = append(b, 0)
		b = append(b, pad(len(b))...)
		b = append(b, data...)
		b = append(b, pad(len(data))...)
		_, err := f.Write(b)
		return err
	}
	dirs := map[string]bool{}
	var names []string
	for dst := range files {
		names = append(names, dst)
		for d := path.Dir(dst); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var ds []string
	for d := range dirs {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	for _, d := range ds {
		if err := entry(d[1:], 0o040755, nil); err != nil {
			return err
		}
	}
	sort.Strings(names)
	for _, dst := range names {
		src, err := os.Open(files[dst])
		if err != nil {
			return err
		}
		data, err := io.ReadAll(src)
		src.Close()
		if err != nil {
			return err
		}
		if err := entry(dst[1:], 0o100755, data); err != nil {
			return err
		}
	}
	if err := entry("init", 0o100755, []byte(init)); err != nil {
		return err
	}
	return entry("TRAILER!!!", 0, nil)
}
