package imagecache

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMountKeepsEMMCReadahead: the device under a cache mount reads ahead
// 128 KiB, as an eMMC does, although mounting squashfs raises a device's
// readahead to 1 MiB; at 10 MB/s every byte read ahead and not used costs
// a cold launch 0.1 ms.
func TestMountKeepsEMMCReadahead(t *testing.T) {
	_, f, img := testImage(t, []byte("readahead"))
	state := filepath.Join(t.TempDir(), "state")
	l, err := Mount(state, f, img, false)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	t.Cleanup(func() { GC(state) })
	dev := mountDevice(t, l.Dir)
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%s/queue/read_ahead_kb", dev))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "128" {
		t.Errorf("device %s under the cache mount %s reads ahead %s KiB, want 128", dev, l.Dir, got)
	}
}

// mountDevice is the major:minor of the filesystem mounted at dir.
func mountDevice(t *testing.T, dir string) string {
	t.Helper()
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer mi.Close()
	sc := bufio.NewScanner(mi)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 4 && f[4] == dir {
			return f[2]
		}
	}
	t.Fatalf("%s is not in /proc/self/mountinfo", dir)
	return ""
}
