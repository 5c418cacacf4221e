package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"

	"cimg.dev/cimg/launcher"
	"cimg.dev/cimg/manifest"
)

// features is what `cimg-oci features` reports: only what create applies.
func featureSet() *features.Features {
	yes, no := true, false
	var caps []string
	for c := range manifest.Capabilities {
		caps = append(caps, c)
	}
	slices.Sort(caps)
	opts := launcher.OCIMountOptions()
	slices.Sort(opts)
	return &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions:  opts,
		Linux: &features.Linux{
			Namespaces:   []string{"cgroup", "ipc", "mount", "network", "pid", "user", "uts"},
			Capabilities: caps,
			Cgroup:       &features.Cgroup{V1: &yes, V2: &yes, Systemd: &yes, SystemdUser: &no, Rdma: &no},
			Seccomp: &features.Seccomp{Enabled: &yes,
				Actions:    []string{"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRAP"},
				Operators:  []string{"SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"},
				KnownFlags: []string{"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"}, SupportedFlags: []string{"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"}},
			Apparmor: &features.Apparmor{Enabled: &no},
			Selinux:  &features.Selinux{Enabled: &no},
			IntelRdt: &features.IntelRdt{Enabled: &no},
		},
		Annotations: map[string]string{launcher.OCIImageAnnotation: "a .cimg whose verified payload is the container's root"},
	}
}

// rootfsOf is the container's root on the host: the .cimg the
// annotation names, mounted from cimg's mount cache, or root.path.
func rootfsOf(spec *specs.Spec, bundle string, st *state) (string, func(), error) {
	if img := spec.Annotations[launcher.OCIImageAnnotation]; img != "" {
		st.Image = img
		return launcher.OCIImage(img, cimgStateDir(), "/etc/cimg/keys")
	}
	root := spec.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(bundle, root)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return "", nil, fmt.Errorf("root.path: %w", err)
	}
	if !fi.IsDir() {
		return "", nil, fmt.Errorf("root.path %s: not a directory", root)
	}
	return root, func() {}, nil
}

// cimgStateDir is cimg-run's state directory, whose mount cache a .cimg
// root shares ($CIMG_STATE_DIR for tests).
func cimgStateDir() string {
	if d := os.Getenv("CIMG_STATE_DIR"); d != "" {
		return d
	}
	return "/run/cimg"
}

// cmdSpec writes a starting config.json, as `runc spec` does: a shell in
// ./rootfs with the usual namespaces, mounts and masks.
func cmdSpec(args []string) (int, error) {
	bundle := "."
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case (a == "--bundle" || a == "-b") && i+1 < len(args):
			bundle = args[i+1]
			i++
		case a == "--rootless":
			return 0, errors.New("spec --rootless: cimg-oci runs as root only")
		default:
			return 0, fmt.Errorf("spec: unknown argument %q", a)
		}
	}
	p := filepath.Join(bundle, "config.json")
	if _, err := os.Stat(p); err == nil {
		return 0, fmt.Errorf("%s exists", p)
	}
	b, _ := json.MarshalIndent(defaultSpec(), "", "\t")
	return 0, os.WriteFile(p, append(b, '\n'), 0o644)
}

func defaultSpec() *specs.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{Terminal: true, Args: []string{"sh"}, Cwd: "/",
			Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"},
			Capabilities: &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			Rlimits:      []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}}, NoNewPrivileges: true},
		Hostname: "cimg",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.CgroupNamespace}},
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
				"/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}
