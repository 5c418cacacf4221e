// Package inspect describes a .cimg for people and scripts: its sections
// and their sizes, the squashfs parameters, signer key ids, the manifest
// and, on request, every file (read with go-diskfs, an independent squashfs
// reader, so a listing never depends on our own writer's idea of the
// format).
package inspect

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/squashfs"
	"cimg.dev/cimg/manifest"
)

// Section is one region of the file.
type Section struct {
	Name   string `json:"name"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
}

// Report is everything inspect prints.
type Report struct {
	Path        string             `json:"path"`
	Size        int64              `json:"size"`
	Sections    []Section          `json:"sections"`
	Compression string             `json:"compression"`
	BlockSize   uint32             `json:"block_size"`
	Inodes      uint32             `json:"inodes"`
	RootHash    string             `json:"root_hash"`
	Salt        string             `json:"salt"`
	Signers     []string           `json:"signers"`
	Manifest    *manifest.Manifest `json:"manifest"`
	ManifestRaw string             `json:"-"`
	Files       []File             `json:"files,omitempty"`
}

// Open reads path's footer, manifest and superblock; withFiles adds the
// file listing.
func Open(path string, withFiles bool) (*Report, error) {
	img, f, err := format.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ft := img.Footer
	r := &Report{
		Path:        path,
		Size:        img.Size(),
		RootHash:    hex.EncodeToString(ft.RootHash[:]),
		Salt:        hex.EncodeToString(ft.Salt),
		ManifestRaw: string(img.Manifest),
		Signers:     []string{},
		Sections: []Section{
			{"squashfs", 0, ft.PayloadSize},
			{"verity", ft.TreeOffset, ft.TreeSize},
			{"manifest", ft.ManifestOffset, ft.ManifestSize},
			{"signatures", ft.SigOffset, ft.SigSize},
			{"footer", img.Size() - format.FooterSize, format.FooterSize},
		},
	}
	for _, s := range img.Signatures {
		r.Signers = append(r.Signers, s.KeyID.String())
	}
	info, err := squashfs.ReadInfo(img.Payload())
	if err != nil {
		return nil, fmt.Errorf("%s: squashfs section: %w", path, err)
	}
	r.Compression, r.BlockSize, r.Inodes = info.Compression.String(), info.BlockSize, info.Inodes
	if r.Manifest, err = manifest.Parse(img.Manifest, path+" (embedded manifest)"); err != nil {
		return nil, err
	}
	if withFiles {
		if r.Files, err = listFiles(f, ft.PayloadSize, info); err != nil {
			return nil, fmt.Errorf("%s: list files: %w", path, err)
		}
	}
	return r, nil
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) error {
	m := r.Manifest
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "image:\t%s (%s)\n", r.Path, human(r.Size))
	fmt.Fprintf(tw, "app:\t%s %s (%s)\n", m.Name, m.Version, m.Arch)
	fmt.Fprintf(tw, "command:\t%s\n", strings.Join(m.Argv(nil), " "))
	fmt.Fprintf(tw, "squashfs:\t%s, %s blocks, %d inodes\n", r.Compression, human(int64(r.BlockSize)), r.Inodes)
	fmt.Fprintf(tw, "verity:\tsha256, root %s\n", r.RootHash)
	fmt.Fprintf(tw, "\tsalt %s\n", r.Salt)
	if len(r.Signers) == 0 {
		fmt.Fprintf(tw, "signed by:\tnobody (unsigned)\n")
	} else {
		fmt.Fprintf(tw, "signed by:\t%s\n", strings.Join(r.Signers, ", "))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nsections:\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  name\toffset\tbytes\tsize\t\n")
	for _, s := range r.Sections {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t\n", s.Name, s.Offset, s.Size, human(s.Size))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nmanifest:\n")
	for _, l := range strings.Split(strings.TrimRight(r.ManifestRaw, "\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if r.Files != nil {
		fmt.Fprintf(w, "\nfiles:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		for _, f := range r.Files {
			name := f.Path
			if f.Target != "" {
				name += " -> " + f.Target
			}
			why := ""
			switch {
			case f.Source != "":
				why = "<- " + f.Source + " (" + f.Reason + ")"
			case f.Reason != "":
				why = "(" + f.Reason + ")"
			}
			fmt.Fprintf(tw, "  %s\t%d/%d\t%d\t%s\t%s\n", f.Mode, f.UID, f.GID, f.Size, name, why)
		}
		tw.Flush()
	}
	return nil
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
