// Package partial names and cleans the resumable downloads in a store's
// tmp/ (package fetch writes them, in the cimg-fetch helper): dl-KEY.part
// and its sidecar dl-KEY.json, KEY a hash of the source (its URL, or an
// OCI digest). It has no network code, so that cimg-run, which only
// removes them, does not link any.
package partial

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Base is the path of key's partial in dir, less ".part" or ".json".
func Base(dir, key string) string {
	h := sha256.Sum256([]byte(key))
	return filepath.Join(dir, "dl-"+hex.EncodeToString(h[:12]))
}

// Discard removes key's partial and sidecar (after admission, or when the
// complete file was refused: its bytes are not worth resuming).
func Discard(dir, key string) {
	// The partial first: a kill between the two leaves a sidecar alone,
	// which the next download replaces, never a whole partial without
	// one (whose bytes it would have to fetch again).
	b := Base(dir, key)
	os.Remove(b + ".part")
	os.Remove(b + ".json")
}

// Stale removes the partials in dir that no download is writing (a
// writer holds an exclusive flock on its .part), and returns their paths.
func Stale(dir string) ([]string, error) {
	parts, err := filepath.Glob(filepath.Join(dir, "dl-*.part"))
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, p := range parts {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			b := strings.TrimSuffix(p, ".part")
			os.Remove(b + ".json")
			os.Remove(b + ".json.tmp")
			if os.Remove(p) == nil {
				removed = append(removed, p)
			}
		}
		f.Close()
	}
	// Sidecars whose partial is gone.
	sides, _ := filepath.Glob(filepath.Join(dir, "dl-*.json"))
	for _, s := range sides {
		if _, err := os.Stat(strings.TrimSuffix(s, ".json") + ".part"); errors.Is(err, os.ErrNotExist) {
			os.Remove(s)
		}
	}
	return removed, nil
}
