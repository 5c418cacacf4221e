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

// stageClosure resolves the shared-library closure of the binary (binImg
// in the image, binHost on the host; none when both are "") and of the
// ELF objects among the other inputs in the sysroot, and stages it where
// the target loader looks, plus a loader cache naming every library (see
// package elfdeps for why). staged is what the inputs put in the image:
// a library found there is not taken from the sysroot.
func stageClosure(st *stage.Stager, spec *Spec, binImg, binHost string, objects []elfInput, staged map[string]string) error {
	root := spec.Sysroot
	if root == "" {
		root = "/"
	}
	opts := elfdeps.Options{Root: elfdeps.Root{Dir: root}, Extra: spec.Libs, Image: staged}
	var progs []elfdeps.Program
	var first *elfdeps.File
	what := "the inputs"
	if binHost != "" {
		f, err := elfdeps.ReadFile(binHost)
		if err != nil {
			return fmt.Errorf("%s: %w", binHost, err)
		}
		if f.Static && len(spec.Libs) == 0 && len(objects) == 0 {
			return nil
		}
		progs, first, what = append(progs, elfdeps.Program{Path: binImg, Host: binHost}), f, spec.Binary
	} else {
		// No binary: an executable with an interpreter goes first, as it
		// names the loader (and so glibc or musl) the closure is for.
		sort.SliceStable(objects, func(i, j int) bool {
			return objects[i].file.Interp != "" && objects[j].file.Interp == ""
		})
		first = objects[0].file
	}
	if a := spec.Manifest.Arch; a != "" {
		if t, ok := elfdeps.TargetByArch(a); ok {
			opts.Target = &t
		}
	}
	if opts.Target == nil {
		t, err := elfdeps.TargetOf(first)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		opts.Target = &t
	}
	for _, o := range objects {
		// An object of another architecture in an added tree is refused
		// rather than skipped: it is dynamic, so it is meant to be loaded
		// (an extension module, a plugin), and this image's loader never
		// can — most likely the tree or the --sysroot is the wrong one,
		// and skipping would turn that into an import error at run time.
		// Data that merely looks like ELF (objects, kernel modules, static
		// blobs) has no PT_DYNAMIC and never gets here.
		if ok, why := opts.Target.Matches(o.file); !ok {
			return fmt.Errorf("%s (%s in the image) is an ELF object for %s, but the image is for %s: its libraries cannot be resolved and the loader would refuse it", o.host, o.image, why, opts.Target.Arch)
		}
		progs = append(progs, elfdeps.Program{Path: o.image, Host: o.host, Plugin: len(progs) > 0})
	}
	res, err := elfdeps.ResolvePrograms(progs, opts)
	if err != nil {
		return fmt.Errorf("resolve libraries of %s in %s: %w", what, root, err)
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
	spec.neededBy = neededBy(res.Needs)
	var libs []elfdeps.CacheEntry
	dirs := map[string]bool{}
	for _, o := range res.Objects {
		if o.Reason == "program" {
			continue
		}
		// A --rootfs or --add may have brought it already; the cache
		// names it all the same.
		if !st.Tree().Has(o.Path) {
			if err := st.Add(o.Host, o.Path, o.Reason); err != nil {
				return fmt.Errorf("stage %s: %w", o.Path, err)
			}
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
	} else if (res.Interp != nil || len(libs) > 0) && !st.Tree().Has("/etc/ld.so.cache") {
		// Without an interpreter (only modules were packed) the libc is
		// unknown; glibc reads this cache, and musl never opens it.
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

// neededBy groups the resolver's DT_NEEDED edges by library, each
// requester once, in the order the resolver met them; "--lib" stands for
// a library declared on the command line.
func neededBy(needs []elfdeps.Need) map[string][]string {
	out := map[string][]string{}
	seen := map[elfdeps.Need]bool{}
	for _, n := range needs {
		k := elfdeps.Need{Library: n.Library, NeededBy: n.NeededBy}
		if seen[k] {
			continue
		}
		seen[k] = true
		by := n.NeededBy
		if by == "" {
			by = "--lib"
		}
		out[n.Library] = append(out[n.Library], by)
	}
	return out
}

const provenanceReason = "generated: provenance"

// provenanceRecord is a stage.Record plus, for a library, every object
// that needs it. cimg-build inspect
// reads path, source and reason and ignores the rest.
type provenanceRecord struct {
	stage.Record
	NeededBy []string `json:"needed_by,omitempty"`
	// Encoder, on the record of the provenance file itself, names the
	// compressor that wrote the image (library, version, C or pure Go).
	Encoder string `json:"encoder,omitempty"`
}

// writeProvenance stages the record of every staged path, with who
// needed each library, and its own record naming the encoder.
func writeProvenance(st *stage.Stager, neededBy map[string][]string, encoder string) error {
	var recs []provenanceRecord
	for _, r := range st.Records() {
		recs = append(recs, provenanceRecord{Record: r, NeededBy: neededBy[r.Path]})
	}
	recs = append(recs, provenanceRecord{
		Record:  stage.Record{Path: ProvenancePath, Reason: provenanceReason},
		Encoder: encoder,
	})
	b, err := json.MarshalIndent(recs, "", " ")
	if err != nil {
		return err
	}
	return st.AddBytes(ProvenancePath, append(b, '\n'), 0o444, provenanceReason)
}
