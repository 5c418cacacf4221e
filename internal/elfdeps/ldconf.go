package elfdeps

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// ReadLdSoConf returns the library directories listed in the root's
// /etc/ld.so.conf, following include lines (globs, relative to /etc) as
// ldconfig does. A missing file lists nothing.
func ReadLdSoConf(root Root) []string {
	var dirs []string
	seen := map[string]bool{}
	var read func(p string, depth int)
	read = func(p string, depth int) {
		if depth > 8 || seen[p] {
			return
		}
		seen[p] = true
		hp, err := root.HostPath(p)
		if err != nil {
			return
		}
		b, err := os.ReadFile(hp)
		if err != nil {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := sc.Text()
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = line[:i]
			}
			line = strings.TrimSpace(line)
			switch {
			case line == "":
			case strings.HasPrefix(line, "include") && len(line) > 7 && (line[7] == ' ' || line[7] == '\t'):
				for _, pat := range strings.Fields(line[8:]) {
					if !path.IsAbs(pat) {
						pat = path.Join(path.Dir(p), pat)
					}
					matches, _ := filepath.Glob(root.host(pat))
					sort.Strings(matches)
					for _, m := range matches {
						rel, err := filepath.Rel(root.Dir, m)
						if err == nil {
							read("/"+filepath.ToSlash(rel), depth+1)
						}
					}
				}
			case strings.HasPrefix(line, "hwcap"):
			default:
				for _, d := range strings.FieldsFunc(line, func(r rune) bool { return r == ':' || r == ',' || r == ' ' || r == '\t' }) {
					if path.IsAbs(d) {
						dirs = append(dirs, path.Clean(d))
					}
				}
			}
		}
	}
	read("/etc/ld.so.conf", 0)
	return dirs
}
