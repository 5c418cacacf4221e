package manifest

import "strings"

// Capabilities maps every Linux capability name to its number (as of
// Linux 5.9; later kernels have added none).
var Capabilities = map[string]int{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// CanonicalCap upper-cases a capability name and adds the CAP_ prefix:
// "net_bind_service" → "CAP_NET_BIND_SERVICE".
func CanonicalCap(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(s, "CAP_") {
		s = "CAP_" + s
	}
	return s
}

// Arches are the canonical architecture names (Debian's) with the ELF
// machine each runs.
var Arches = map[string]string{
	"amd64":   "x86_64",
	"arm64":   "aarch64",
	"armhf":   "arm (EABI5, hard float)",
	"armel":   "arm (EABI5, soft float)",
	"i386":    "x86",
	"riscv64": "riscv64",
}

var archAliases = map[string]string{
	"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64",
	"arm": "armhf", "armv7": "armhf", "armv7l": "armhf", "armv7hf": "armhf",
	"386": "i386", "i686": "i386", "x86": "i386",
}

// CanonicalArch maps common spellings (x86_64, aarch64, armv7, GOARCH
// names) to the canonical name; unknown names are returned unchanged for
// Validate to report.
func CanonicalArch(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if a, ok := archAliases[s]; ok {
		return a
	}
	return s
}

// Rlimits are the resource names [limits.rlimits] accepts.
var Rlimits = map[string]bool{
	"as": true, "core": true, "cpu": true, "data": true, "fsize": true, "locks": true,
	"memlock": true, "msgqueue": true, "nice": true, "nofile": true, "nproc": true,
	"rss": true, "rtprio": true, "rttime": true, "sigpending": true, "stack": true,
}
