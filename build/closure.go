package build

import (
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	"cimg.dev/cimg/internal/elfdeps"
	"cimg.dev/cimg/internal/stage"
	"cimg.dev/cimg/manifest"
)

// ProvenancePath is where an image records what went in and why.
const ProvenancePath = "/.cimg/provenance.json"

// stageClosure resolves the binary's shared-library closure in the
// sysroot and stages it where the target loader looks, plus a loader
// cache naming every library (see package elfdeps for why).
func stageClosure(st *stage.Stager, spec *Spec, binPath string) error {
	root := spec.Sysroot
	if root == "" {
		root = "/"
	}
	opts := elfdeps.Options{Root: elfdeps.Root{Dir: root}, Extra: spec.Libs}
	if a := spec.Manifest.Arch; a != "" {
		if t, ok := elfdeps.TargetByArch(a); ok {
			opts.Target = &t
		}
	}
	prog := elfdeps.Program{Path: binPath, Host: spec.Binary}
	f, err := elfdeps.ReadFile(spec.Binary)
	if err != nil {
		return fmt.Errorf("%s: %w", spec.Binary, err)
	}
	if f.Static && len(spec.Libs) == 0 {
		return nil
	}
	res, err := elfdeps.ResolvePrograms([]elfdeps.Program{prog}, opts)
	if err != nil {
		return fmt.Errorf("resolve libraries of %s in %s: %w", spec.Binary, root, err)
	}
	if err := elfdeps.CheckVersions(res); err != nil {
		return err
	}
	if users := elfdeps.NSSUsers(res); len(users) > 0 {
		more := ""
		if len(users) > 3 {
			users, more = users[:3], fmt.Sprintf(" and %d more", len(users)-3)
		}
		spec.warn("%s%s call NSS functions (user, group, host lookups) and no libnss_* module is packed: glibc ≥ 2.34 does files and dns itself given /etc/nsswitch.conf, /etc/passwd, /etc/hosts, /etc/resolv.conf in the image (--add them); any other source needs its module declared, e.g. --lib libnss_systemd.so.2",
			strings.Join(users, "; "), more)
	}
	var libs []elfdeps.CacheEntry
	dirs := map[string]bool{}
	for _, o := range res.Objects {
		if o.Reason == "program" {
			continue
		}
		if st.Tree().Has(o.Path) {
			continue // a --rootfs or --add brought it already
		}
		if err := st.Add(o.Host, o.Path, o.Reason); err != nil {
			return fmt.Errorf("stage %s: %w", o.Path, err)
		}
		if o.Reason != "interpreter" {
			libs = append(libs, elfdeps.CacheEntry{Flags: res.Target.CacheID, Name: o.Soname(), Path: o.Path})
			dirs[path.Dir(o.Path)] = true
		}
	}
	if res.Musl {
		var ds []string
		for d := range dirs {
			ds = append(ds, d)
		}
		sort.Strings(ds)
		p := "/etc/ld-musl-" + res.Target.MuslArch + ".path"
		if err := st.AddBytes(p, []byte(strings.Join(ds, "\n")+"\n"), 0o644, "generated: musl library path"); err != nil {
			return err
		}
	} else if res.Interp != nil && !st.Tree().Has("/etc/ld.so.cache") {
		cache := elfdeps.BuildCache(libs, elfdeps.ByteOrderOf(res.Target))
		if err := st.AddBytes("/etc/ld.so.cache", cache, 0o644, "generated: loader cache of the packed libraries"); err != nil {
			return err
		}
	}
	if spec.Manifest.Arch == "" {
		spec.Manifest.Arch = manifest.CanonicalArch(res.Target.Arch)
	}
	return nil
}

// writeProvenance stages the record of every staged path.
func writeProvenance(st *stage.Stager) error {
	recs := st.Records()
	b, err := json.MarshalIndent(recs, "", " ")
	if err != nil {
		return err
	}
	return st.AddBytes(ProvenancePath, append(b, '\n'), 0o444, "generated: provenance")
}
