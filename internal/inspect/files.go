package inspect

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"

	"github.com/diskfs/go-diskfs/backend/file"
	dsquash "github.com/diskfs/go-diskfs/filesystem/squashfs"

	"cimg.dev/cimg/internal/squashfs"
)

// File is one entry of the image's listing.
type File struct {
	Path   string `json:"path"`
	Mode   string `json:"mode"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   int64  `json:"size"`
	Target string `json:"target,omitempty"`
	// Source and Reason come from the image's provenance record: the host
	// (or sysroot) path it was packed from and why it is there.
	Source string `json:"source,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// provenancePath is where cimg-build records what went in and why (kept
// in step with build.ProvenancePath; inspect must not import build).
const provenancePath = ".cimg/provenance.json"

func addProvenance(sq *dsquash.FileSystem, files []File) {
	b, err := sq.ReadFile(provenancePath)
	if err != nil {
		return // images from other tools have none
	}
	var recs []struct{ Path, Source, Reason string }
	if json.Unmarshal(b, &recs) != nil {
		return
	}
	by := map[string]int{}
	for i, r := range recs {
		by[r.Path] = i
	}
	for i := range files {
		if j, ok := by[files[i].Path]; ok {
			files[i].Source, files[i].Reason = recs[j].Source, recs[j].Reason
		}
	}
}

// listFiles walks the payload with go-diskfs. Its reader has no lz4
// decompressor, so lz4 images are refused with that reason.
func listFiles(f *os.File, size int64, info squashfs.Info) ([]File, error) {
	if info.Compression == squashfs.LZ4 {
		return nil, fmt.Errorf("the go-diskfs squashfs reader cannot read lz4 images; list them with unsquashfs -lln")
	}
	sq, err := dsquash.Read(file.New(f, true), size, 0, int64(info.BlockSize))
	if err != nil {
		return nil, err
	}
	var out []File
	// Paths are io/fs style ("." is the root). Walk with ReadDir's entries: go-diskfs's Stat re-reads the parent
	// directory on every call.
	var walk func(dir string) error
	walk = func(dir string) error {
		ents, err := sq.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("read directory %s: %w", dir, err)
		}
		for _, e := range ents {
			p := path.Join(dir, e.Name())
			fi, err := e.Info()
			if err != nil {
				return fmt.Errorf("stat %s: %w", p, err)
			}
			ent := File{Path: "/" + p, Mode: fi.Mode().String(), Size: fi.Size()}
			if st, ok := fi.Sys().(dsquash.StatT); ok {
				ent.UID, ent.GID, ent.Target = st.UID, st.GID, st.LinkTarget
			} else if st, ok := fi.Sys().(*dsquash.StatT); ok {
				ent.UID, ent.GID, ent.Target = st.UID, st.GID, st.LinkTarget
			}
			if fi.IsDir() {
				ent.Size = 0
			}
			out = append(out, ent)
			if fi.IsDir() && fi.Mode()&fs.ModeSymlink == 0 {
				if err := walk(p); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		return nil, err
	}
	addProvenance(sq, out)
	return out, nil
}
