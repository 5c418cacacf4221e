package elfdeps

import (
	"debug/elf"
	"fmt"
	"sort"
	"strings"
)

// CheckVersions fails when a packed object needs a symbol version (e.g.
// GLIBC_2.38) that the packed library it needs does not define: the
// target loader would refuse to start the program. It names the object,
// the version, the library and, where section headers allow, a symbol.
func CheckVersions(res *Result) error {
	bySoname := map[string]*Object{}
	for _, o := range res.Objects {
		bySoname[o.Soname()] = o
		bySoname[o.Name] = o
	}
	var errs []string
	for _, o := range res.Objects {
		libs := make([]string, 0, len(o.File.Verneed))
		for lib := range o.File.Verneed {
			libs = append(libs, lib)
		}
		sort.Strings(libs)
		for _, lib := range libs {
			dep, ok := bySoname[lib]
			if !ok {
				continue // not a DT_NEEDED we packed; Resolve reported it
			}
			defined := map[string]bool{}
			for _, v := range dep.File.Verdef {
				defined[v] = true
			}
			for _, v := range o.File.Verneed[lib] {
				if defined[v] {
					continue
				}
				msg := fmt.Sprintf("%s needs %s from %s, which the packed %s does not define", o.Path, v, lib, dep.Path)
				if sym := symbolWithVersion(o.Host, lib, v); sym != "" {
					msg += " (symbol " + sym + ")"
				}
				errs = append(errs, msg)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("symbol versions missing: %s", strings.Join(errs, "; "))
	}
	return nil
}

func symbolWithVersion(host, lib, version string) string {
	f, err := elf.Open(host)
	if err != nil {
		return ""
	}
	defer f.Close()
	syms, err := f.ImportedSymbols()
	if err != nil {
		return ""
	}
	for _, s := range syms {
		if s.Version == version && s.Library == lib {
			return s.Name
		}
	}
	return ""
}

// nssFuncs are glibc entry points that load libnss_* modules with dlopen.
var nssFuncs = map[string]bool{
	"getpwnam": true, "getpwnam_r": true, "getpwuid": true, "getpwuid_r": true, "getpwent": true,
	"getgrnam": true, "getgrnam_r": true, "getgrgid": true, "getgrgid_r": true, "getgrent": true,
	"getgrouplist": true, "initgroups": true, "getspnam": true,
	"getaddrinfo": true, "gethostbyname": true, "gethostbyname_r": true, "gethostbyname2": true,
	"gethostbyname2_r": true, "gethostbyaddr": true, "gethostbyaddr_r": true, "getnameinfo": true,
	"getservbyname": true, "getservbyname_r": true, "getservbyport": true, "getprotobyname": true,
}

// NSSUsers lists objects that import NSS functions, when the closure is
// glibc and holds no libnss_* module: such a program resolves no user
// or host names on the target unless the modules are declared (--lib
// libnss_files.so.2, libnss_dns.so.2).
func NSSUsers(res *Result) []string {
	if res.Musl || res.Interp == nil {
		return nil
	}
	for _, o := range res.Objects {
		if strings.HasPrefix(o.Soname(), "libnss_") {
			return nil
		}
	}
	var users []string
	for _, o := range res.Objects {
		if strings.HasPrefix(o.Soname(), "libc.so") {
			continue
		}
		f, err := elf.Open(o.Host)
		if err != nil {
			continue
		}
		syms, err := f.ImportedSymbols()
		f.Close()
		if err != nil {
			continue
		}
		var used []string
		for _, s := range syms {
			if nssFuncs[s.Name] {
				used = append(used, s.Name)
			}
		}
		if len(used) > 0 {
			sort.Strings(used)
			users = append(users, fmt.Sprintf("%s (%s)", o.Path, strings.Join(used, ", ")))
		}
	}
	return users
}
