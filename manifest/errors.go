package manifest

import (
	"fmt"
	"strconv"
	"strings"
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

func (m *Manifest) errAt(key, format string, args ...any) *Error {
	return &Error{Source: m.source, Line: findLine(m.text, key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

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
	want := key
	// An index on the last part is an element of an array of tables
	// (mounts[1]: its header's line) or of an inline array (command[0]:
	// its key's line). Only array-of-table indexes matter for placing a key.
	if spans := indexSpans(key); len(spans) > 0 {
		if last := spans[len(spans)-1]; last[1] == len(key) {
			if n := scanFor(text, key); n > 0 {
				return n
			}
			want = key[:last[0]]
		}
	}
	if n := scanFor(text, want); n > 0 {
		return n
	}
	if strings.Contains(want, ".") {
		return findLine(text, want[:strings.LastIndex(want, ".")])
	}
	return 0
}

// scanFor returns the line of the table header or key line that is want
// (or, for a key line, the key want is below), or 0.
func scanFor(text []byte, want string) int {
	// Unknown keys of [[mounts]] come without an index: match any.
	strip := !strings.Contains(want, "[")
	match := func(k string) string {
		if strip {
			return stripIndexes(k)
		}
		return k
	}
	table := ""
	counts := map[string]int{}
	for i, line := range strings.Split(string(text), "\n") {
		if name, ok := tableHeader(line, 2); ok {
			name = normKey(name)
			table = name + "[" + strconv.Itoa(counts[name]) + "]"
			counts[name]++
			if match(table) == want {
				return i + 1
			}
			continue
		}
		if name, ok := tableHeader(line, 1); ok {
			table = normKey(name)
			if table == want {
				return i + 1
			}
			continue
		}
		if k, ok := lineKey(line); ok {
			full := normKey(k)
			if table != "" {
				full = table + "." + full
			}
			if full = match(full); full == want || strings.HasPrefix(want, full+".") {
				return i + 1
			}
		}
	}
	return 0
}

// The line matchers below are written out by hand rather than as regular
// expressions: package regexp, and the unicode tables it keeps reachable,
// made 266 KB of the 4.30 MB cimg-run, and a cold launch reads nearly all
// of the binary from the device: the Go runtime's start touches almost
// every 128 KiB readahead window of it before main runs (a cold
// `cimg-run help` read 3926 KiB before, 3662 after; at 40 MB/s it took
// 0.95x the time). errors_test.go checks each matcher against the
// expression it replaced.

// spaces are regexp's \s: ASCII space, tab, newline, form feed, return.
const spaces = " \t\n\f\r"

func isSpace(c byte) bool { return strings.IndexByte(spaces, c) >= 0 }

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// tableHeader matches a table header line, "[name]" for depth 1 and
// "[[name]]" for depth 2, with spaces around and a comment after; name is
// what is between the brackets (no bracket in it), trimmed.
func tableHeader(line string, depth int) (string, bool) {
	i := skipSpace(line, 0)
	for range depth {
		if i == len(line) || line[i] != '[' {
			return "", false
		}
		i++
	}
	start := i
	for i < len(line) && line[i] != '[' && line[i] != ']' {
		i++
	}
	inner := line[start:i]
	if inner == "" {
		return "", false
	}
	for range depth {
		if i == len(line) || line[i] != ']' {
			return "", false
		}
		i++
	}
	if i = skipSpace(line, i); i < len(line) && line[i] != '#' {
		return "", false
	}
	return strings.Trim(inner, spaces), true
}

// lineKey matches a line that assigns a key: a dotted key of bare
// (A-Za-z0-9_-) or "quoted" parts, spaces allowed around the dots, then
// "=". It returns the key as written.
func lineKey(line string) (string, bool) {
	start := skipSpace(line, 0)
	i := start
	for {
		if i < len(line) && line[i] == '"' {
			end := strings.IndexByte(line[i+1:], '"')
			if end < 0 {
				return "", false
			}
			i += end + 2
		} else {
			j := i
			for j < len(line) && isBareKey(line[j]) {
				j++
			}
			if j == i {
				return "", false
			}
			i = j
		}
		key := line[start:i]
		switch j := skipSpace(line, i); {
		case j < len(line) && line[j] == '.':
			i = skipSpace(line, j+1)
		case j < len(line) && line[j] == '=':
			return key, true
		default:
			return "", false
		}
	}
}

func isBareKey(c byte) bool {
	return isLower(c) || isUpper(c) || isDigit(c) || c == '_' || c == '-'
}

// indexSpans returns where each "[N]" (N decimal digits) is in s, left to
// right, as [start, end) pairs.
func indexSpans(s string) [][2]int {
	var spans [][2]int
	for i := 0; i < len(s); i++ {
		if s[i] != '[' {
			continue
		}
		j := i + 1
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j > i+1 && j < len(s) && s[j] == ']' {
			spans = append(spans, [2]int{i, j + 1})
			i = j
		}
	}
	return spans
}

// stripIndexes removes every "[N]" from s.
func stripIndexes(s string) string {
	spans := indexSpans(s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	at := 0
	for _, sp := range spans {
		b.WriteString(s[at:sp[0]])
		at = sp[1]
	}
	b.WriteString(s[at:])
	return b.String()
}
