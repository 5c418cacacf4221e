package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileMountTargetSymlinks (CVE-2019-16884 / CVE-2021-30465 class):
// a mount target that is, or passes through, a symlink — in the image, or
// planted by the app in a volume another mount goes inside — is refused:
// no volume, tmpfs or bind lands on a host path. Host canaries unchanged.
func TestHostileMountTargetSymlinks(t *testing.T) {
	h := newHostile(t)
	for _, c := range []struct{ name, link, target, kind string }{
		{"volume on an image link to /etc", "/etc", "/data", "volume"},
		{"tmpfs on an image link climbing out", "../../../../../../etc", "/data", "tmpfs"},
		{"volume below an image link", "/etc", "/data/sub", "volume"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := h.in(t)
			mount := "[[mounts]]\ntype = \"" + c.kind + "\"\ntarget = \"" + c.target + "\"\n"
			if c.kind == "volume" {
				mount += "source = \"v\"\n"
			} else {
				mount += "size = \"1MiB\"\n"
			}
			img, out := h.rootfsImage(probeCmd+mount, func(root string) {
				os.Symlink(c.link, filepath.Join(root, "data"))
			})
			if img == "" && strings.Contains(c.target, "/data/") {
				// cimg-build refuses to make a mount point below a link: forge
				// the manifest of the /data image instead, as an attacker with
				// the key could.
				img, out = h.rootfsImage(probeCmd+strings.Replace(mount, c.target, "/data", 1), func(root string) {
					os.Symlink(c.link, filepath.Join(root, "data"))
				})
				if img != "" {
					img = h.forge(img, nil, func(m string) string { return strings.Replace(m, `"/data"`, `"`+c.target+`"`, 1) })
				}
			}
			if img == "" {
				// cimg-build refusing the image is a refusal too.
				if !strings.Contains(out, "data") {
					t.Errorf("cimg-build refused without naming the target: %s", out)
				}
				t.Logf("cimg-build refused it: %s", strings.TrimSpace(out))
				return
			}
			h.refused([]string{c.target, "symlink"}, img, "--", "exit", "0")
		})
	}
	// An app plants /etc/sub -> /etc in its volume (at /etc); the next launch mounts
	// a tmpfs at /etc/sub, inside that volume.
	t.Run("tmpfs on a link planted in a volume", func(t *testing.T) {
		h := h.in(t)
		vol := "[[mounts]]\ntype = \"volume\"\nsource = \"v\"\ntarget = \"/etc\"\n"
		planter := h.image(probeCmd + vol)
		if r := h.run(planter, "--", "symlink", "/etc", "/etc/sub"); r.code != 0 {
			t.Fatalf("planting the link: %+v", r)
		}
		if l, err := os.Readlink(filepath.Join(h.vols, "probe/v/sub")); err != nil || l != "/etc" {
			t.Fatalf("the planted link on the host: %q %v", l, err)
		}
		img := h.image(probeCmd + vol + "[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/etc/sub\"\nsize = \"1MiB\"\n")
		h.refused([]string{"/etc/sub", "symlink"}, img, "--", "exit", "0")
	})
}
