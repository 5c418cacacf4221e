package manifest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Error is one problem in a manifest, at a key path and, when the key is
// in the source text, a line.
type Error struct {
	Source string
	Line   int
	Key    string
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found, one per line when printed.
type Errors struct{ List []*Error }

func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, x := range e.List {
		lines[i] = x.Error()
	}
	return strings.Join(lines, "\n")
}

// lazyRegexp compiles on first use: the launcher parses manifests on
// every start, and most of these are needed only for errors.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

func (m *Manifest) errAt(key, format string, args ...any) *Error {
	return &Error{Source: m.source, Line: findLine(m.text, key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

var (
	tableHdr = lazyRegexp(`^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$`)
	arrayHdr = lazyRegexp(`^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$`)
	keyLine  = lazyRegexp(`^\s*((?:[A-Za-z0-9_-]+|"[^"]*")(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"))*)\s*=`)
	indexRe  = lazyRegexp(`\[(\d+)\]`)
)

func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"`)
	}
	return strings.Join(parts, ".")
}

// findLine returns the line where key (a.b.c, array tables and elements as
// mounts[1].target or command[0]) is written in text, or 0. It understands
// the TOML people write by hand — tables, arrays of tables, dotted keys —
// not every corner of the grammar; a key it cannot place gets no line.
func findLine(text []byte, key string) int {
	if len(text) == 0 || key == "" {
		return 0
	}
	// Only array-of-table indexes matter for placing a key; an index on
	// the last part (an element of an inline array) points at its key.
	want := key
	if loc := indexRe().FindAllStringIndex(want, -1); len(loc) > 0 {
		last := loc[len(loc)-1]
		if last[1] == len(want) {
			want = want[:last[0]]
		}
	}
	// Unknown keys of [[mounts]] come without an index: match any.
	strip := !strings.Contains(want, "[")
	match := func(k string) string {
		if strip {
			return indexRe().ReplaceAllString(k, "")
		}
		return k
	}
	table := ""
	counts := map[string]int{}
	for i, line := range strings.Split(string(text), "\n") {
		if m := arrayHdr().FindStringSubmatch(line); m != nil {
			name := normKey(m[1])
			table = name + "[" + strconv.Itoa(counts[name]) + "]"
			counts[name]++
			if match(table) == want {
				return i + 1
			}
			continue
		}
		if m := tableHdr().FindStringSubmatch(line); m != nil {
			table = normKey(m[1])
			if table == want {
				return i + 1
			}
			continue
		}
		if m := keyLine().FindStringSubmatch(line); m != nil {
			full := normKey(m[1])
			if table != "" {
				full = table + "." + full
			}
			if full = match(full); full == want || strings.HasPrefix(want, full+".") {
				return i + 1
			}
		}
	}
	if strings.Contains(want, ".") {
		return findLine(text, want[:strings.LastIndex(want, ".")])
	}
	return 0
}
