package manifest

import (
	"math/rand/v2"
	"reflect"
	"regexp"
	"testing"
)

// The regular expressions findLine used before its matchers were written
// out by hand (errors.go says why); the hand matchers must agree with them
// on every line.
var (
	tableHdrRe = regexp.MustCompile(`^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$`)
	arrayHdrRe = regexp.MustCompile(`^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$`)
	keyLineRe  = regexp.MustCompile(`^\s*((?:[A-Za-z0-9_-]+|"[^"]*")(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"))*)\s*=`)
	indexRe    = regexp.MustCompile(`\[(\d+)\]`)
)

// lineCorpus is the hand-picked lines, then n random ones over an alphabet
// of what the matchers look at (brackets, quotes, dots, '=', '#', digits,
// key characters, every \s character and some that are not). No '\n':
// findLine matches lines, split at it.
func lineCorpus(n int) []string {
	lines := []string{
		"", "[app]", "  [ app ]  # c", "[[mounts]]", " [[ mounts ]] #x", "[[mounts]] x", "[app] x",
		"[]", "[ ]", "[[ ]]", "[[]]", "[a]]", "[[a]", "[a.b . c]", `["a.b".c]`, "\t[app]\r",
		"key = 1", "  key=1", `"quoted key" = 1`, `a . b . "c" = 2`, `a."b = 1`, "a. = 1", ".a = 1",
		"a b = 1", "= 1", "a", "a .", "a.b", "-_9 = x", "\va = 1", "a\v= 1", "a\f=1", "é = 1",
		"mounts[0].target", "command[12]", "a[1][2]", "a[]", "a[x]", "[1]", "a[1", "a1]", "[[1]]",
		"a[01]b[2]", "\xff[1]", "[app]\xff", "[app] #\xff",
	}
	const alphabet = "[]\".=# \t\r\f\vab_-09.é\x00\xff"
	r := rand.New(rand.NewPCG(15, 2026))
	for range n {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		lines = append(lines, string(b))
	}
	return lines
}

func TestLineMatchersAgreeWithTheirRegexps(t *testing.T) {
	header := func(re *regexp.Regexp, line string) (string, bool) {
		if m := re.FindStringSubmatch(line); m != nil {
			return normKey(m[1]), true
		}
		return "", false
	}
	for _, line := range lineCorpus(300000) {
		for depth, re := range map[int]*regexp.Regexp{1: tableHdrRe, 2: arrayHdrRe} {
			wantName, wantOK := header(re, line)
			name, ok := tableHeader(line, depth)
			if ok != wantOK || normKey(name) != wantName {
				t.Errorf("tableHeader(%q, %d) = %q, %v; the regexp says %q, %v", line, depth, normKey(name), ok, wantName, wantOK)
			}
		}
		var wantKey string
		m := keyLineRe.FindStringSubmatch(line)
		if m != nil {
			wantKey = m[1]
		}
		if key, ok := lineKey(line); ok != (m != nil) || key != wantKey {
			t.Errorf("lineKey(%q) = %q, %v; the regexp says %q, %v", line, key, ok, wantKey, m != nil)
		}
		var wantSpans [][2]int
		for _, loc := range indexRe.FindAllStringIndex(line, -1) {
			wantSpans = append(wantSpans, [2]int{loc[0], loc[1]})
		}
		if spans := indexSpans(line); !reflect.DeepEqual(spans, wantSpans) {
			t.Errorf("indexSpans(%q) = %v; the regexp says %v", line, spans, wantSpans)
		}
		if got, want := stripIndexes(line), indexRe.ReplaceAllString(line, ""); got != want {
			t.Errorf("stripIndexes(%q) = %q; the regexp says %q", line, got, want)
		}
		if t.Failed() {
			return // one line's report is enough to fix it
		}
	}
}

// TestFindLinePlacesKeys: keys in tables, arrays of tables, dotted and
// quoted keys, an element of an inline array, and a key findLine cannot
// place. An unwritten key of the second [[mounts]] used to be placed at
// the first one's header: its trailing index was taken for an inline
// array's.
func TestFindLinePlacesKeys(t *testing.T) {
	text := []byte(`name = "x"
[app]
command = ["/bin/app", "arg"]
  "user" = 1000

[[mounts]]
type = "tmpfs"
[[ mounts ]] # the second
target = "/data"
[limits]
memory.high = "64MiB"
`)
	for key, want := range map[string]int{
		"name":                 1,
		"app":                  2,
		"app.command":          3,
		"app.command[1]":       3,
		"app.user":             4,
		"mounts[0]":            6,
		"mounts[0].type":       7,
		"mounts[1]":            8, // an element of an array of tables: its header
		"mounts[1].size":       8, // not written: its table's line
		"mounts[1].target":     9,
		"mounts.target":        9, // an unknown key of [[mounts]] comes without an index
		"limits.memory.high":   11,
		"limits.memory.high.x": 11, // below a key that is set: the key's line
		"limits.other":         10, // not written: its table's line
		"nowhere":              0,
	} {
		if got := findLine(text, key); got != want {
			t.Errorf("findLine(%q) = %d, want %d", key, got, want)
		}
	}
}
