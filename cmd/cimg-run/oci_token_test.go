package main

// oci:// sources behind bearer-token auth: the real docker-registry
// configured with `auth: token:` and the token server registrytest
// writes for it (distribution ships none). Each way a client holds its
// credentials is tried (--creds, and a docker config.json with a
// password, an identity token or a registry token), and each way a token
// goes bad must fail the command with one clear error and leave the
// installed version as it was, running.

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"

	"cimg.dev/cimg/internal/fetch"
	"cimg.dev/cimg/internal/instance"
	"cimg.dev/cimg/internal/ocipull"
	"cimg.dev/cimg/internal/ocipull/registrytest"
)

// dockerConfig writes a docker-style config.json whose entry for the
// registry has the fields given (auth, identitytoken, registrytoken).
func dockerConfig(t *testing.T, r *registrytest.Registry, fields map[string]string) string {
	t.Helper()
	var kv []string
	for k, v := range fields {
		kv = append(kv, `"`+k+`":"`+v+`"`)
	}
	slices.Sort(kv)
	conf := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(conf, []byte(`{"auths":{"`+r.Addr+`":{`+strings.Join(kv, ",")+`}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

// basicAuth is the "auth" field of a config.json: base64 of USER:PASS.
func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// tokenRequests says whether the token server answered a request that
// starts with prefix and names scope.
func tokenRequests(r *registrytest.Registry, prefix, scope string) bool {
	for _, l := range r.Token.Requests() {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, scope) && !strings.Contains(l, " -> ") {
			return true
		}
	}
	return false
}

// TestOCITokenInstall: behind bearer-token auth, cimg-build pushes (with
// --creds, and with a config.json holding an identity token) and
// cimg-run installs with --creds and with each kind of config.json
// entry: a password (GET realm with basic auth), an identity token (the
// OAuth2 refresh_token form) and a registry token (sent as it is).
func TestOCITokenInstall(t *testing.T) {
	r := registrytest.StartToken(t)
	store, state := storeRoot(t), stateDir(t)
	img := probeImage(t, "version = \"1.0.0\"\n")
	ociPush(t, r, img, "apps/probe:1")
	if !tokenRequests(r, "GET "+r.User+" ", "repository:apps/probe:pull,push") && !tokenRequests(r, "GET "+r.User+" ", "repository:apps/probe:push,pull") {
		t.Errorf("cimg-build push got no push token; the token server answered:\n%s", strings.Join(r.Token.Requests(), "\n"))
	}

	res := ociInstall(t, r, store, state, "--creds", r.Creds(), "oci://"+r.Addr+"/apps/probe:1")
	if res.code != 0 {
		t.Fatalf("install with --creds through token auth: %+v\ntoken server: %v", res, r.Token.Requests())
	}
	if run := storeCmd(t, store, state, "run", "probe", "--", "exit", "7"); run.code != 7 {
		t.Errorf("run the installed probe: %+v; want exit 7", run)
	}
	want, _ := os.ReadFile(img)
	if !storeHolds(t, store, want) {
		t.Errorf("no file in the store %s is the pushed image", store)
	}
	if !tokenRequests(r, "GET "+r.User+" ", "repository:apps/probe:pull") {
		t.Errorf("no pull token was asked for with the user's credentials:\n%s", strings.Join(r.Token.Requests(), "\n"))
	}

	// Push from CI with what `docker login` leaves in config.json for a
	// token registry: an identity token, exchanged by the OAuth2 form.
	identity := dockerConfig(t, r, map[string]string{"auth": basicAuth("<token>", ""), "identitytoken": r.Token.RefreshToken})
	if out, err := exec.Command(cimgBuild, "push", "--ca", r.CAFile, "--registry-config", identity, probeImage(t, "version = \"1.1.0\"\n"), r.Addr+"/apps/probe:2").CombinedOutput(); err != nil {
		t.Fatalf("cimg-build push with an identity token: %v\n%s\ntoken server: %v", err, out, r.Token.Requests())
	}
	if !tokenRequests(r, "POST refresh_token ", "repository:apps/probe:") {
		t.Errorf("push with an identity token did not use the OAuth2 refresh_token form:\n%s", strings.Join(r.Token.Requests(), "\n"))
	}

	for _, c := range []struct {
		name   string
		fields map[string]string
		via    string // the token server's log line that shows the way taken; "" none
	}{
		{"password", map[string]string{"auth": basicAuth(r.User, r.Pass)}, "GET " + r.User + " "},
		{"identity", map[string]string{"auth": basicAuth("<token>", ""), "identitytoken": r.Token.RefreshToken}, "POST refresh_token "},
		// A registry token is the bearer token itself: the token server
		// is not asked at all.
		{"registrytoken", map[string]string{"registrytoken": r.Token.Mint(t, time.Hour, "repository:apps/probe:pull")}, ""},
	} {
		before := len(r.Token.Requests())
		conf := dockerConfig(t, r, c.fields)
		res := ociInstall(t, r, store, state, "--registry-config", conf, "--name", c.name, "oci://"+r.Addr+"/apps/probe:2")
		if res.code != 0 {
			t.Errorf("install with a config.json holding a %s: %+v\ntoken server: %v", c.name, res, r.Token.Requests())
			continue
		}
		if run := storeCmd(t, store, state, "run", c.name, "--", "exit", "3"); run.code != 3 {
			t.Errorf("run the app installed with a %s: %+v; want exit 3", c.name, run)
		}
		asked := r.Token.Requests()[before:]
		switch {
		case c.via == "" && len(asked) != 0:
			t.Errorf("with a registry token the token server was still asked: %v", asked)
		case c.via != "" && !slices.ContainsFunc(asked, func(l string) bool { return strings.HasPrefix(l, c.via) && !strings.Contains(l, " -> ") }):
			t.Errorf("with a %s: the token server answered %v, want a %q request", c.name, asked, c.via)
		}
	}
}

// TestOCITokenRefusals: a running app, and updates that fail on the way
// to a token: a wrong password at the token server, an unknown identity
// token, no credentials, a token server whose clock is an hour behind
// (its tokens expired before they arrive) and an expired registry token
// in config.json. Each fails with one clear error naming the reference
// and what to do; the store is as it was and the old version runs on,
// the same process.
func TestOCITokenRefusals(t *testing.T) {
	r := registrytest.StartToken(t)
	store, state := storeRoot(t), stateDir(t)
	t.Cleanup(func() { exec.Command(cimgRun, "stop", "--state-dir", state, "app").Run() })
	sleeper := func(version string) string {
		return probeImage(t, "version = \""+version+"\"\n[app]\ncommand = [\"/usr/bin/probe\", \"sleep\"]\n")
	}
	ociPush(t, r, sleeper("1.0.0"), "apps/probe:1")
	ociPush(t, r, sleeper("2.0.0"), "apps/probe:2")
	if res := ociInstall(t, r, store, state, "--creds", r.Creds(), "--name", "app", "oci://"+r.Addr+"/apps/probe:1"); res.code != 0 {
		t.Fatalf("install: %+v", res)
	}
	if res := runImage(t, exec.Command(cimgRun, "run", "-d", "--store", store, "--state-dir", state, "app")); res.code != 0 {
		t.Fatalf("run -d app: %+v", res)
	}
	supervisor := func() int {
		t.Helper()
		i, err := instance.Get(state, "app")
		if err != nil || !i.Running() {
			t.Fatalf("app is not running: %+v %v", i, err)
		}
		return i.Supervisor
	}
	pid := supervisor()
	before := storeSnapshot(t, store)
	ref := r.Addr + "/apps/probe:2"

	for _, c := range []struct {
		what  string
		args  func() []string
		skew  time.Duration
		wants []string
	}{
		{"wrong password", func() []string { return []string{"--creds", r.User + ":wrong"} }, 0,
			[]string{"oci://" + ref + ": ", "refused the credentials", "--creds USER:PASSWORD"}},
		{"unknown identity token", func() []string {
			return []string{"--registry-config", dockerConfig(t, r, map[string]string{"auth": basicAuth("<token>", ""), "identitytoken": "refresh-unknown"})}
		}, 0, []string{"oci://" + ref + ": ", "refused the credentials", "--registry-config"}},
		{"no credentials", func() []string { return []string{"--registry-config", filepath.Join(t.TempDir(), "none.json")} }, 0,
			[]string{"oci://" + ref + ": ", "--creds USER:PASSWORD"}},
		{"token server clock an hour behind", func() []string { return []string{"--creds", r.Creds()} }, -time.Hour,
			[]string{"oci://" + ref + ": ", "refused the bearer token", "expired", "clock"}},
		{"expired registry token", func() []string {
			// Expired past the registry's leeway for clock skew.
			tok := r.Token.Mint(t, -registrytest.Leeway-10*time.Minute, "repository:apps/probe:pull")
			return []string{"--registry-config", dockerConfig(t, r, map[string]string{"registrytoken": tok})}
		}, 0, []string{"oci://" + ref + ": ", "refused the bearer token", "expired", "log in again"}},
	} {
		r.Token.SetSkew(c.skew)
		args := append([]string{"--quiet", "--ca", r.CAFile}, c.args()...)
		res := storeCmd(t, store, state, "update", append(args, "app", "oci://"+ref)...)
		t.Logf("%s: %s", c.what, strings.TrimSpace(res.stderr))
		if res.code == 0 {
			t.Errorf("%s: the update succeeded: %+v", c.what, res)
		}
		for _, w := range c.wants {
			if !strings.Contains(res.stderr, w) {
				t.Errorf("%s: stderr %q does not say %q", c.what, res.stderr, w)
			}
		}
		if n := strings.Count(res.stderr, "cimg-fetch:"); n != 1 {
			t.Errorf("%s: %d cimg-fetch messages, want one:\n%s", c.what, n, res.stderr)
		}
		if after := storeSnapshot(t, store); !slices.Equal(before, after) {
			t.Errorf("%s changed the store:\nbefore %v\nafter  %v", c.what, before, after)
		}
		if now := supervisor(); now != pid {
			t.Errorf("%s: the app was restarted (supervisor %d, then %d)", c.what, pid, now)
		}
		if l := storeCmd(t, store, state, "list").stdout; !strings.Contains(l, "1.0.0") || !strings.Contains(l, "running") || strings.Contains(l, "2.0.0") {
			t.Errorf("%s: list after the refusal:\n%s", c.what, l)
		}
	}
	r.Token.SetSkew(0)
	// The same update with good credentials goes through: what was
	// refused was the token, not the image.
	if res := storeCmd(t, store, state, "update", "--quiet", "--ca", r.CAFile, "--creds", r.Creds(), "app", "oci://"+ref); res.code != 0 || !strings.Contains(res.stdout, "updated to 2.0.0") {
		t.Errorf("update with good credentials: %+v", res)
	}
}

// TestOCITokenPushRefusals: cimg-build push tells a token refusal as
// install does: a wrong password at the token server, an expired registry
// token, and a token that grants pulling only. The tag is left as it was.
func TestOCITokenPushRefusals(t *testing.T) {
	r := registrytest.StartToken(t)
	ociPush(t, r, probeImage(t, "version = \"1.0.0\"\n"), "apps/probe:1")
	ref := r.Addr + "/apps/probe:1"
	var was map[string]any
	r.Manifest(t, "apps/probe", "1", &was)
	img := probeImage(t, "version = \"2.0.0\"\n")
	for _, c := range []struct {
		what  string
		args  []string
		wants []string
	}{
		{"wrong password", []string{"--creds", r.User + ":wrong"},
			[]string{ref, "token server", "refused the credentials", "--creds USER:PASSWORD"}},
		{"expired registry token", []string{"--registry-config", dockerConfig(t, r, map[string]string{
			"registrytoken": r.Token.Mint(t, -registrytest.Leeway-10*time.Minute, "repository:apps/probe:pull,push")})},
			[]string{ref, "refused the bearer token", "expired", "log in again"}},
		{"pull-only token", []string{"--registry-config", dockerConfig(t, r, map[string]string{
			"registrytoken": r.Token.Mint(t, time.Hour, "repository:apps/probe:pull")})},
			[]string{ref, "does not grant what was asked"}},
	} {
		out, err := exec.Command(cimgBuild, append(append([]string{"push", "--ca", r.CAFile}, c.args...), img, ref)...).CombinedOutput()
		t.Logf("%s: %s", c.what, strings.TrimSpace(string(out)))
		if err == nil {
			t.Errorf("%s: the push succeeded:\n%s", c.what, out)
		}
		for _, w := range c.wants {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: %q does not say %q", c.what, out, w)
			}
		}
		var now map[string]any
		if r.Manifest(t, "apps/probe", "1", &now); fmt.Sprint(now) != fmt.Sprint(was) {
			t.Errorf("%s: the tag moved:\nwas %v\nnow %v", c.what, was, now)
		}
	}
}

// TestOCITokenExpiresMidDownload: the bearer token cimg-fetch got while
// resolving the tag has expired when the blob download, cut short,
// resumes: the registry refuses the Range request's token, oras fetches
// a fresh one with the same credentials, and the download goes on from
// the partial. The token is made stale by putting an expired one in the
// client's token cache, not by waiting: distribution forgives 60 s of
// expiry, and a test that slept past it would be slow and timing-bound.
// In this process, as TestOCIResume: the same calls cimg-fetch makes.
func TestOCITokenExpiresMidDownload(t *testing.T) {
	r := registrytest.StartToken(t)
	img := probeImage(t, "version = \"1.0.0\"\n")
	ociPush(t, r, img, "apps/probe:1")
	tmp := t.TempDir()
	client, err := fetch.NewClient(r.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	blob, err := ocipull.Resolve(ctx, r.Addr+"/apps/probe:1", ocipull.Options{Client: client, Creds: r.Creds(), Arch: ocipull.HostArch()})
	if err != nil {
		t.Fatal(err)
	}
	key := blob.Desc.Digest.String()
	const cut = 512 << 10
	if blob.Desc.Size < 2*cut {
		t.Fatalf("the image is %d bytes, too small to cut at %d", blob.Desc.Size, cut)
	}
	if _, err := fetch.Get(blob.Context(ctx), tmp, key, blob.URL,
		fetch.Options{Client: cutBody{blob.Client, cut, new(bool)}, Attempts: 1, Size: blob.Desc.Size}); err == nil {
		t.Fatal("the cut download succeeded")
	}

	// The cached token expires (past the registry's leeway). The cache is
	// keyed by the registry's host and the requests' scopes, which
	// blob.Context sets.
	const scope = "repository:apps/probe:pull"
	expired := r.Token.Mint(t, -registrytest.Leeway-time.Minute, scope)
	if _, err := blob.Client.Cache.Set(ctx, r.Addr, auth.SchemeBearer, scope, func(context.Context) (string, error) { return expired, nil }); err != nil {
		t.Fatal(err)
	}
	if tok, _ := blob.Client.Cache.GetToken(ctx, r.Addr, auth.SchemeBearer, scope); tok != expired {
		t.Fatal("the expired token did not replace the cached one")
	}
	asked := len(r.Token.Requests())
	path, err := fetch.Get(blob.Context(ctx), tmp, key, blob.URL, fetch.Options{Client: blob.Client, Attempts: 1, Size: blob.Desc.Size})
	if err != nil {
		t.Fatalf("the resumed download with an expired token cached: %v\ntoken server: %v", err, r.Token.Requests())
	}
	if err := ocipull.Check(path, blob.Desc); err != nil {
		t.Errorf("the resumed download: %v", err)
	}
	if fresh := r.Token.Requests()[asked:]; len(fresh) != 1 || !strings.HasPrefix(fresh[0], "GET "+r.User+" "+scope) {
		t.Errorf("after the expired token, the token server answered %v; want one GET for %s", fresh, scope)
	}
	// The registry refused the expired token once, then sent the rest of
	// the blob (not all of it) to the fresh one.
	log, _ := os.ReadFile(r.Log)
	if n := strings.Count(string(log), `msg="token not to be used after`); n != 1 {
		t.Errorf("the registry refused %d expired tokens, want 1 (the one put in the cache)", n)
	}
	written := r.BlobGETs(t, key)
	if rest := fmt.Sprint(blob.Desc.Size - cut); len(written) == 0 || written[len(written)-1] != rest {
		t.Errorf("blob GETs wrote %v bytes; want the last to be the rest, %s", written, rest)
	}
}
