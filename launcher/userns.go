package launcher

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The host ids an app's user namespace maps to: the ranges of the user
// "cimg" in /etc/subuid and /etc/subgid, as shadow-utils allocates them
// for rootless containers, or else defaultIDBase. Root in the app is
// then an unprivileged uid on the host: a file it writes in a volume, a
// process that escapes, is nobody's.
const (
	subIDUser     = "cimg"
	defaultIDBase = 1_000_000_000 // above any range useradd hands out
	idCount       = 65536
)

// hostIDRange reads the cimg user's subordinate id ranges from files
// (the subuid and subgid paths; empty: the system's).
func hostIDRange(files [2]string) (*IDMap, error) {
	if files[0] == "" {
		files = [2]string{"/etc/subuid", "/etc/subgid"}
	}
	m := &IDMap{UIDBase: defaultIDBase, GIDBase: defaultIDBase, Count: idCount}
	for i, f := range files {
		base, count, found, err := subIDRange(f, subIDUser)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		if count < idCount {
			return nil, fmt.Errorf("%s: %s has %d ids, the app's user namespace needs %d (give it a range like %s:%d:%d)", f, subIDUser, count, idCount, subIDUser, base, idCount)
		}
		if i == 0 {
			m.UIDBase = base
		} else {
			m.GIDBase = base
		}
	}
	return m, nil
}

// subIDRange finds user's first range in a subuid/subgid file.
func subIDRange(file, user string) (base, count uint32, found bool, err error) {
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(fields) != 3 || fields[0] != user {
			continue
		}
		b, err1 := strconv.ParseUint(fields[1], 10, 32)
		c, err2 := strconv.ParseUint(fields[2], 10, 32)
		if err1 != nil || err2 != nil || b == 0 || b+c > 1<<32-1 {
			return 0, 0, false, fmt.Errorf("%s:%d: %q: want %s:FIRST-ID:COUNT with a range inside 1..4294967294", file, line, sc.Text(), user)
		}
		return uint32(b), uint32(c), true, nil
	}
	return 0, 0, false, sc.Err()
}
