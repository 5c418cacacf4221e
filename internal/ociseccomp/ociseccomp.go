// Package ociseccomp compiles an OCI runtime-spec seccomp profile to BPF
// for the native arch, for cimg-oci. It is a package of its own, imported
// only by cmd/cimg-oci, because the library it compiles with builds every
// arch's syscall table in its init: linked into cimg-run, that init ran
// on each launch and exec (about 5 % of cimg-run exec's CPU, perf record
// of 200 execs), for profiles cimg-run never reads.
package ociseccomp

import (
	"fmt"
	"math/bits"
	"runtime"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ociArch is the runtime-spec name of the arch this binary runs on: a
// profile whose architectures leave it out is refused rather than
// loaded for a foreign arch.
var ociArch = map[string]specs.Arch{
	"amd64": specs.ArchX86_64, "386": specs.ArchX86, "arm64": specs.ArchAARCH64, "arm": specs.ArchARM,
	"riscv64": specs.ArchRISCV64, "ppc64le": specs.ArchPPC64LE, "s390x": specs.ArchS390X,
}

// Compile compiles a config's seccomp profile to BPF for the native
// arch. Names this arch does not have are skipped, as libseccomp does
// (profiles list every arch's calls). What the BPF here cannot express
// exactly is refused: notify/trace actions, flags, and masked compares
// other than "none of these bits" or "this one bit".
func Compile(s *specs.LinuxSeccomp) (*unix.SockFprog, error) {
	if s == nil {
		return nil, nil
	}
	if s.ListenerPath != "" || s.ListenerMetadata != "" {
		return nil, fmt.Errorf("linux.seccomp.listenerPath: seccomp notify is not supported by cimg-oci")
	}
	for _, f := range s.Flags {
		// The log flag only adds logging of what is allowed; spec_allow
		// leaves speculative-store mitigations to the process. Neither
		// weakens what the filter denies, and cimg-oci loads without them.
		if f != "SECCOMP_FILTER_FLAG_LOG" && f != "SECCOMP_FILTER_FLAG_SPEC_ALLOW" {
			return nil, fmt.Errorf("linux.seccomp.flags: %s is not supported by cimg-oci", f)
		}
	}
	native := ociArch[runtime.GOARCH]
	if len(s.Architectures) > 0 {
		found := false
		for _, a := range s.Architectures {
			found = found || a == native
		}
		if !found {
			return nil, fmt.Errorf("linux.seccomp.architectures: %v does not include this machine's %s", s.Architectures, native)
		}
	}
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("linux.seccomp: %w", err)
	}
	def, err := ociAction(s.DefaultAction, s.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("linux.seccomp.defaultAction: %w", err)
	}
	// The library takes no errno in its default action: a placeholder
	// (TRACE, which no group may use) is swapped for the real one after.
	placeholder := uint32(seccomp.ActionTrace)
	pol := &seccomp.Policy{DefaultAction: seccomp.ActionTrace}
	for i, sc := range s.Syscalls {
		act, err := ociAction(sc.Action, sc.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("linux.seccomp.syscalls[%d]: %w", i, err)
		}
		g := seccomp.SyscallGroup{Action: seccomp.Action(act)}
		var conds seccomp.ArgumentConditions
		for _, a := range sc.Args {
			c, err := ociCondition(a)
			if err != nil {
				return nil, fmt.Errorf("linux.seccomp.syscalls[%d] (%v): %w", i, sc.Names, err)
			}
			conds = append(conds, c)
		}
		for _, n := range sc.Names {
			if _, ok := info.SyscallNames[n]; !ok {
				continue
			}
			if len(conds) == 0 {
				g.Names = append(g.Names, n)
			} else {
				g.NamesWithCondtions = append(g.NamesWithCondtions, seccomp.NameWithConditions{Name: n, Conditions: conds})
			}
		}
		if len(g.Names)+len(g.NamesWithCondtions) > 0 {
			pol.Syscalls = append(pol.Syscalls, g)
		}
	}
	insts := []bpf.Instruction{bpf.RetConstant{Val: def}}
	if len(pol.Syscalls) > 0 {
		if insts, err = pol.Assemble(); err != nil {
			return nil, fmt.Errorf("linux.seccomp: %w", err)
		}
		for i, in := range insts {
			if r, ok := in.(bpf.RetConstant); ok && r.Val == placeholder {
				insts[i] = bpf.RetConstant{Val: def}
			}
		}
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("linux.seccomp: %w", err)
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}, nil
}

func ociAction(a specs.LinuxSeccompAction, errno *uint) (uint32, error) {
	switch a {
	case specs.ActAllow:
		return unix.SECCOMP_RET_ALLOW, nil
	case specs.ActErrno:
		e := uint(unix.EPERM)
		if errno != nil {
			e = *errno
		}
		return unix.SECCOMP_RET_ERRNO | uint32(e&unix.SECCOMP_RET_DATA), nil
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case specs.ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case specs.ActTrap:
		return unix.SECCOMP_RET_TRAP, nil
	case specs.ActLog:
		return unix.SECCOMP_RET_LOG, nil
	}
	return 0, fmt.Errorf("action %s is not supported by cimg-oci", a)
}

func ociCondition(a specs.LinuxSeccompArg) (seccomp.Condition, error) {
	c := seccomp.Condition{Argument: uint32(a.Index), Value: a.Value}
	switch a.Op {
	case specs.OpEqualTo:
		c.Operation = seccomp.Equal
	case specs.OpNotEqual:
		c.Operation = seccomp.NotEqual
	case specs.OpGreaterThan:
		c.Operation = seccomp.GreaterThan
	case specs.OpGreaterEqual:
		c.Operation = seccomp.GreaterOrEqual
	case specs.OpLessThan:
		c.Operation = seccomp.LessThan
	case specs.OpLessEqual:
		c.Operation = seccomp.LessOrEqual
	case specs.OpMaskedEqual:
		// (arg & mask) == value, with the mask in Value and the value in
		// ValueTwo: exact as "no bit set" or "the one bit set".
		switch {
		case a.ValueTwo == 0:
			c.Operation = seccomp.BitsNotSet
		case a.ValueTwo == a.Value && bits.OnesCount64(a.Value) == 1:
			c.Operation = seccomp.BitsSet
		default:
			return c, fmt.Errorf("SCMP_CMP_MASKED_EQ mask %#x value %#x: only a zero value or a one-bit mask equal to the value is supported", a.Value, a.ValueTwo)
		}
	default:
		return c, fmt.Errorf("operator %s is not supported", a.Op)
	}
	return c, nil
}
