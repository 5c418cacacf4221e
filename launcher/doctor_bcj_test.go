package launcher

import (
	"strings"
	"testing"
)

func TestXZBCJCheck(t *testing.T) {
	for _, tc := range []struct {
		cfg              map[string]string
		release, machine string
		ok               bool
		lists            string
	}{
		{map[string]string{"CONFIG_XZ_DEC_X86": "y", "CONFIG_XZ_DEC_ARMTHUMB": "y"}, "6.1.0", "x86_64", true, "x86, armthumb"},
		{map[string]string{"CONFIG_XZ_DEC_X86": "y"}, "6.12.0", "aarch64", false, "x86 "},
		{map[string]string{"CONFIG_XZ_DEC_ARM64": "y"}, "6.12.0", "aarch64", true, "arm64"},
		{nil, "6.6.0", "aarch64", false, "x86, arm, armthumb "},
		{nil, "6.11.0", "aarch64", true, "armthumb, arm64"},
		{map[string]string{}, "6.11.0", "riscv64", true, "no xz BCJ filter"},
	} {
		name, ok, required, detail := xzBCJCheck(tc.cfg, tc.release, tc.machine)
		if name != "squashfs xz BCJ" || ok != tc.ok || required || !strings.Contains(detail, tc.lists) {
			t.Errorf("%v %s %s: got %s ok=%v required=%v %q; want ok=%v, listing %q", tc.cfg, tc.release, tc.machine, name, ok, required, detail, tc.ok, tc.lists)
		}
	}
}
