package manifest

import (
	"regexp"
	"strings"
	"testing"
)

// The hand-written validators accept exactly what the regexps they
// replaced did.
func TestValidatorsMatchTheirRegexps(t *testing.T) {
	inputs := []string{"", "a", "A", "0", "-a", "a-", "a.b_c-d", "hello", "Hello", "_x", "x_1", "1x", "a b", "é",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), "a..b", ".a", "a.", "a-b.c-d",
		"0-1,3", "0-", "-1", "1,,2", "12-34,5", "0", "755", "1777", "17777", "75", "758", "0644", "a.b.c",
		strings.Repeat("a", 61) + "-b", "x." + strings.Repeat("b", 64)}
	for _, c := range []struct {
		name string
		re   string
		fn   func(string) bool
	}{
		{"name", `^[a-z0-9][a-z0-9._-]{0,63}$`, validName},
		{"env key", `^[A-Za-z_][A-Za-z0-9_]*$`, validEnvKey},
		{"volume", `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, validVolume},
		{"hostname", `^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`, validHostname},
		{"cpuset", `^\d+(-\d+)?(,\d+(-\d+)?)*$`, validCpuset},
		{"octal", `^[0-7]{3,4}$`, validOctal},
	} {
		re := regexp.MustCompile(c.re)
		for _, in := range inputs {
			if want := re.MatchString(in); c.fn(in) != want {
				t.Errorf("%s %q: %v, the regexp says %v", c.name, in, !want, want)
			}
		}
	}
}
