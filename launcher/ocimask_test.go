package launcher

import (
	"path/filepath"
	"testing"
)

// TestMaskOfPathTheLauncherCannotSee: a masked /sys or /proc path absent
// from the launcher's view (systemd-nspawn's trimmed /sys has no
// /sys/firmware, the container's fresh sysfs has it, a directory) is
// planned as /dev/null with a tmpfs as its alternative, and the child's
// list marks the alternative; a path the launcher sees gets its kind.
// Before, such a path was taken for a file: the bind failed with ENOTDIR
// and no container could be created under nspawn.
func TestMaskOfPathTheLauncherCannotSee(t *testing.T) {
	if m := maskOf("/proc/sys", "/proc/sys"); len(m) != 1 || m[0].Kind != KindMaskDir {
		t.Errorf("/proc/sys (a directory here): %v", m)
	}
	if m := maskOf("/proc/version", "/proc/version"); len(m) != 1 || m[0].Kind != KindMaskFile {
		t.Errorf("/proc/version (a file here): %v", m)
	}
	// Beneath the image's root, what is not there is not there.
	if m := maskOf("/etc/secret", filepath.Join(t.TempDir(), "etc/secret")); len(m) != 1 || m[0].Kind != KindMaskFile {
		t.Errorf("a missing path in the root: %v", m)
	}
	unseen := "/sys/no-such-dir-in-this-view"
	m := maskOf(unseen, unseen)
	if len(m) != 2 || m[0].Kind != KindMaskFile || m[0].Alt || m[1].Kind != KindMaskDir || !m[1].Alt {
		t.Fatalf("a /sys path the launcher cannot see: %v, want /dev/null then a tmpfs alternative", m)
	}
	raw, err := rawMounts(append([]MountSpec{{Kind: KindReadOnly, Target: "/proc/sys", Optional: true}}, m...))
	if err != nil {
		t.Fatal(err)
	}
	var alts []bool
	for _, r := range raw {
		alts = append(alts, r.alt)
	}
	if len(raw) != 4 || alts[0] || alts[1] || alts[2] || !alts[3] {
		t.Errorf("the child's mounts' alt marks: %v, want only the last (the tmpfs)", alts)
	}
}
