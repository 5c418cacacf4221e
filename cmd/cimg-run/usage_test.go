package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestMissingImageAdvice: an IMAGE argument that is no file gets advice,
// in one line, with the launcher's exit status: a subcommand's name put
// after the flags (the way `cimg-run --state-dir D gc` failed as "open
// gc: no such file or directory") says to put it first, and a name that
// could be an app's says none is installed; a missing path keeps the
// plain error, which names it.
func TestMissingImageAdvice(t *testing.T) {
	state := stateDir(t)
	for _, tc := range []struct {
		image, want string
	}{
		{"gc", "the subcommand gc goes first, before any flag: cimg-run gc [flags]"},
		{"ps", "the subcommand ps goes first"},
		{"no-such-app-here", "image no-such-app-here: no such file here, and no app of that name is installed in /var/lib/cimg/store"},
		{"/nonexistent/app.cimg", "open /nonexistent/app.cimg: no such file or directory"},
	} {
		t.Run(tc.image, func(t *testing.T) {
			res := runImage(t, cimgRunCmd(state, tc.image))
			if res.code != 125 || !strings.Contains(res.stderr, tc.want) || strings.Count(strings.TrimSpace(res.stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want 125 and one line with %q", res.code, res.stderr, tc.want)
			}
		})
	}
}

// TestSubcommandsListed: the names missingImage recognises are exactly
// run's cases (help's spellings -h and --help aside), so a subcommand
// added to one is not missing from the other.
func TestSubcommandsListed(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cases []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "run" {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if sw, ok := n.(*ast.SwitchStmt); ok {
				for _, c := range sw.Body.List {
					for _, e := range c.(*ast.CaseClause).List {
						if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							s, _ := strconv.Unquote(lit.Value)
							if !strings.HasPrefix(s, "-") {
								cases = append(cases, s)
							}
						}
					}
				}
				return false // the first switch: the subcommands
			}
			return true
		})
	}
	if len(cases) == 0 {
		t.Fatal("no switch of subcommands found in main.go's run")
	}
	got, want := slices.Sorted(slices.Values(subcommands())), slices.Sorted(slices.Values(cases))
	if !slices.Equal(got, want) {
		t.Errorf("subcommands %v; run's cases %v", got, want)
	}
}
