// Command cimg-build packs an application into a signed, compressed,
// read-only .cimg image, and inspects, verifies and signs images.
//
// This file is CLI wiring only; the work happens in package build.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	flag "github.com/spf13/pflag"
	"golang.org/x/term"

	"cimg.dev/cimg/build"
	"cimg.dev/cimg/build/push"
	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/inspect"
	"cimg.dev/cimg/internal/keys"
	"cimg.dev/cimg/manifest"
)

const usage = `cimg-build packs an application into a single .cimg image.

Usage:
  cimg-build [flags] [BINARY] -o APP.cimg      build an image
  cimg-build inspect [--json] [--files] IMAGE  show sections, manifest, files
  cimg-build verify [--key PUB]... IMAGE       check hash tree and signatures
  cimg-build keygen NAME                       write NAME.key and NAME.pub
  cimg-build sign --key KEY [-o OUT] IMAGE     add a signature
  cimg-build push [--ca F] [--creds U:P] IMAGE... REGISTRY/REPO:TAG
                                               publish to an OCI registry (arches merge into an index)
  cimg-build help                              this text

Build inputs (combine as needed):
  BINARY                  an ELF program, packed as /usr/bin/NAME with its libraries
                          (a symlink is packed as the same chain of symlinks to its target)
      --sysroot DIR       take those libraries from a target root (cross builds)
      --lib NAME          also pack a dlopen'd library and its closure (repeatable)
  -f, --manifest FILE     cimg.toml: manifest plus a [build] table of inputs
      --rootfs DIR        a directory that becomes the image root
      --resolve-rootfs    also pack the libraries the rootfs's ELF files need
      --from-oci PATH     an OCI image layout dir or docker-archive tarball, flattened
      --platform P        which platform of a multi-platform OCI image (linux/arm/v7)
      --entrypoint PATH   the program to run, as a path in the image
      --add SRC:DST       add a host file or directory at DST (repeatable); the
                          libraries its ELF files (extension modules, plugins) need come too

Build flags:
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "cimg-build: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "help", "-h", "--help":
			fs := buildFlags(&build.Spec{}, new(buildOpts))
			fs.SetOutput(os.Stdout)
			fmt.Print(usage)
			fs.PrintDefaults()
			return nil
		case "inspect":
			return cmdInspect(args[1:])
		case "verify":
			return cmdVerify(args[1:])
		case "keygen":
			return cmdKeygen(args[1:])
		case "sign":
			return cmdSign(args[1:])
		case "push":
			return cmdPush(args[1:])
		case "build":
			args = args[1:]
		}
	}
	return cmdBuild(args)
}

type buildOpts struct {
	manifest, name, version, arch string
	epoch                         string
	sign                          []string
	quiet                         bool
}

func buildFlags(s *build.Spec, o *buildOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("cimg-build", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.StringVarP(&s.Output, "output", "o", "", "image file to write (written atomically)")
	fs.StringVarP(&o.manifest, "manifest", "f", "", "manifest file (cimg.toml)")
	fs.StringVar(&s.Rootfs, "rootfs", "", "directory to use as the image root")
	fs.BoolVar(&s.ResolveRootfs, "resolve-rootfs", false, "with --rootfs: resolve and pack the shared libraries of its ELF files from the sysroot too (off: a rootfs is usually complete)")
	fs.StringVar(&s.Entrypoint, "entrypoint", "", "absolute path in the image of the program to run")
	fs.StringVar(&s.FromOCI, "from-oci", "", "import an OCI image layout directory or docker-archive tarball as the root")
	fs.StringVar(&s.Platform, "platform", "", "with --from-oci: os/arch[/variant] to pick, e.g. linux/arm/v7")
	fs.StringArrayVar(&s.Add, "add", nil, "SRC:DST: add a host file or directory (repeatable)")
	fs.StringVar(&s.Sysroot, "sysroot", "", "target root to take the binary's shared libraries from (default /)")
	fs.StringArrayVar(&s.Libs, "lib", nil, "a dlopen'd library (SONAME or path in the sysroot) to pack with its closure (repeatable)")
	fs.StringVar(&s.Compression, "compression", "", "zstd, xz, gzip or lz4, with an optional level: zstd:19, xz:9 (default zstd:19)")
	fs.Var(blockSizeFlag{&s.BlockSize}, "block-size", "squashfs block size, a power of two from 4K to 1M, e.g. 1M or 131072 (default 256K)")
	fs.IntVar(&s.Level, "level", 0, "compression level, as NAME:LEVEL in --compression (default: zstd 15, gzip 9, lz4 fast, xz best)")
	fs.StringVar(&s.XZBCJ, "xz-bcj", "", "xz filter for executable code: none, x86, arm, armthumb, arm64 (default: the target arch's; none for arm64, which needs Linux 6.11)")
	fs.StringVar(&o.epoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "timestamp for every file and the image, seconds since 1970 (default $SOURCE_DATE_EPOCH, else 0)")
	fs.BoolVar(&s.KeepMtimes, "keep-mtimes", false, "keep the inputs' modification times instead of the epoch")
	fs.BoolVar(&s.KeepOwners, "keep-owners", false, "keep the inputs' uid/gid instead of 0:0")
	fs.StringVar(&o.name, "name", "", "app name (default: from the manifest or the binary)")
	fs.StringVar(&o.version, "version", "", "app version (default: from the manifest, else 0.0.0)")
	fs.StringVar(&o.arch, "arch", "", "target arch (default: from the binary)")
	fs.StringArrayVar(&o.sign, "sign", nil, "sign with this private key file (repeatable)")
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress bar or summary")
	return fs
}

// blockSizeFlag takes a byte count with an optional K or M suffix.
type blockSizeFlag struct{ p *int }

func (f blockSizeFlag) String() string {
	if f.p == nil || *f.p == 0 {
		return ""
	}
	return strconv.Itoa(*f.p)
}

func (f blockSizeFlag) Set(s string) error {
	mult := 1
	num := strings.TrimSuffix(strings.ToUpper(s), "B")
	switch {
	case strings.HasSuffix(num, "K"):
		mult, num = 1<<10, strings.TrimSuffix(num, "K")
	case strings.HasSuffix(num, "M"):
		mult, num = 1<<20, strings.TrimSuffix(num, "M")
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q: want a size such as 131072, 128K or 1M", s)
	}
	*f.p = n * mult
	return nil
}

func (f blockSizeFlag) Type() string { return "size" }

func cmdBuild(args []string) error {
	var spec build.Spec
	var o buildOpts
	fs := buildFlags(&spec, &o)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
	case 1:
		spec.Binary = fs.Arg(0)
	default:
		return fmt.Errorf("one binary at a time (got %s); use --add for more files", strings.Join(fs.Args(), " "))
	}
	if spec.Output == "" {
		return errors.New("no output: give -o APP.cimg")
	}
	if o.epoch != "" {
		e, err := strconv.ParseInt(o.epoch, 10, 64)
		if err != nil || e < 0 {
			return fmt.Errorf("--source-date-epoch %q: want seconds since 1970", o.epoch)
		}
		spec.Epoch = e
	}
	if o.manifest != "" {
		data, err := os.ReadFile(o.manifest)
		if err != nil {
			return err
		}
		if spec.Manifest, err = manifest.Decode(data, o.manifest); err != nil {
			return err
		}
		spec.BaseDir = filepath.Dir(o.manifest)
	} else {
		d := manifest.Default()
		spec.Manifest = &d
	}
	m := spec.Manifest
	if o.name != "" {
		m.Name = o.name
	}
	if o.version != "" {
		m.Version = o.version
	}
	if o.arch != "" {
		m.Arch = manifest.CanonicalArch(o.arch)
	}
	for _, k := range o.sign {
		key, err := keys.LoadPrivate(k)
		if err != nil {
			return err
		}
		spec.Signers = append(spec.Signers, key)
	}

	spec.Warn = func(msg string) { fmt.Fprintf(os.Stderr, "cimg-build: warning: %s\n", msg) }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var bar *progressbar.ProgressBar
	if !o.quiet && term.IsTerminal(int(os.Stderr.Fd())) {
		spec.Progress = func(done, total int64) {
			// Only long builds get a bar: small ones finish before it helps.
			if bar == nil && total > 64<<20 {
				bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionShowBytes(true), progressbar.OptionSetDescription("packing"),
					progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
			}
			if bar != nil {
				bar.Set64(done)
			}
		}
	}
	start := time.Now()
	res, err := build.Build(ctx, spec)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; %s not written", spec.Output)
		}
		return err
	}
	if !o.quiet {
		fmt.Fprintf(os.Stderr, "wrote %s: %d bytes (%s, %d inodes, %d bytes of content) in %.2fs\n  app %s %s (%s), root hash %x\n",
			res.Output, res.Size, res.Compression, res.Squashfs.Inodes,
			res.Squashfs.ContentBytes, time.Since(start).Seconds(),
			res.Manifest.Name, res.Manifest.Version, res.Manifest.Arch, res.Footer.RootHash)
	}
	return nil
}

func cmdInspect(args []string) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "machine-readable output")
	files := fs.Bool("files", false, "list every file in the image")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: cimg-build inspect [--json] [--files] IMAGE")
	}
	r, err := inspect.Open(fs.Arg(0), *files)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return r.WriteText(os.Stdout)
}

func cmdVerify(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	keyFiles := fs.StringArray("key", nil, "trusted public key file (repeatable); with none, signatures are not checked")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: cimg-build verify [--key PUB]... IMAGE")
	}
	var trusted []ed25519.PublicKey
	for _, k := range *keyFiles {
		pub, err := keys.LoadPublic(k)
		if err != nil {
			return err
		}
		trusted = append(trusted, pub)
	}
	path := fs.Arg(0)
	img, f, err := format.OpenFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var signers []format.KeyID
	if len(trusted) > 0 {
		if signers, err = img.VerifySignatures(trusted); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := img.VerifyPayload(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := manifest.Parse(img.Manifest, path+" (embedded manifest)"); err != nil {
		return err
	}
	what := "hash tree and manifest intact; signatures not checked (no --key)"
	if len(trusted) > 0 {
		ids := make([]string, len(signers))
		for i, s := range signers {
			ids[i] = s.String()
		}
		what = "hash tree and manifest intact, signed by " + strings.Join(ids, ", ")
	}
	fmt.Printf("%s: OK: %s\n", path, what)
	return nil
}

func cmdKeygen(args []string) error {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		return errors.New("usage: cimg-build keygen NAME  (writes NAME.key, mode 0600, and NAME.pub)")
	}
	priv, pub, err := keys.Generate(args[0])
	if err != nil {
		return err
	}
	k, err := keys.LoadPublic(pub)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s (keep it secret) and %s (key id %s)\n", priv, pub, format.KeyIDOf(k))
	return nil
}

func cmdSign(args []string) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	keyFiles := fs.StringArray("key", nil, "private key file (repeatable)")
	out := fs.StringP("output", "o", "", "write the signed image here (default: replace IMAGE atomically)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || len(*keyFiles) == 0 {
		return errors.New("usage: cimg-build sign --key KEY [-o OUT] IMAGE")
	}
	var signers []ed25519.PrivateKey
	for _, k := range *keyFiles {
		key, err := keys.LoadPrivate(k)
		if err != nil {
			return err
		}
		signers = append(signers, key)
	}
	in := fs.Arg(0)
	dst := *out
	if dst == "" {
		dst = in
	}
	return build.Sign(in, dst, signers)
}

func cmdPush(args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	var o push.Options
	fs.StringVar(&o.CA, "ca", "", "a PEM file of CA certificates to trust for the registry, besides the system's")
	fs.StringVar(&o.Creds, "creds", "", "USER:PASSWORD for the registry (default: from --registry-config)")
	fs.StringVar(&o.RegistryConfig, "registry-config", "", "docker-style config.json with registry credentials (default ~/.docker/config.json)")
	fs.BoolVar(&o.PlainHTTP, "plain-http", false, "talk http:// to the registry, not https:// (tests only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return errors.New("usage: cimg-build push [--ca FILE] [--creds USER:PASS] [--registry-config FILE] IMAGE... REGISTRY/REPO:TAG (several images: one per arch, one index)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args = fs.Args()
	res, err := push.Push(ctx, args[:len(args)-1], strings.TrimPrefix(args[len(args)-1], "oci://"), o)
	if err != nil {
		return err
	}
	// The digest on stdout alone, for scripts (oci://REF@DIGEST pins it).
	fmt.Println(res.Tagged())
	ms := make([]string, len(res.Manifests))
	for i, m := range res.Manifests {
		ms[i] = m.String()
	}
	if res.Index != "" {
		fmt.Fprintf(os.Stderr, "pushed %s: manifest %s; the tag is an index of %s\n", res.Ref, strings.Join(ms, ", "), strings.Join(res.Arches, ", "))
	} else {
		fmt.Fprintf(os.Stderr, "pushed %s: manifest %s (%s)\n", res.Ref, ms[0], strings.Join(res.Arches, ", "))
	}
	return nil
}
