package registrytest

// Bearer-token auth as registries do it (Docker Hub, GHCR, Harbor): the
// registry answers 401 with `Bearer realm=...,service=...,scope=...`, the
// client gets a JWT from the realm with its credentials, and the registry
// checks the JWT's signature, issuer, audience, expiry and access claims.
//
// The registry stays Debian's docker-registry, configured with `auth:
// token:`. The token server is ours, written for the tests: distribution
// ships none (its docs point at docker_auth and the like), and none is
// packaged in Debian. It speaks both ways distribution's token spec
// allows: GET realm?service=&scope= with basic credentials
// (docs/spec/auth/token.md) and the OAuth2 POST form with
// grant_type=password or refresh_token (docs/spec/auth/oauth.md), which
// oras-go uses when the credentials hold an identity (refresh) token.
//
// How distribution 2.8 verifies a token (registry/auth/token/token.go):
// the x5c header's certificate chain must lead to a certificate of the
// rootcertbundle, the leaf's key must verify the signature (ES256 here:
// r||s, as libtrust wants it), iss must be the configured issuer, aud the
// configured service, and exp/nbf hold with 60 s of leeway; the access
// claim must grant each action the request needs.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Leeway is the clock skew distribution 2.8 forgives on exp and nbf: a
// token is refused only once it expired more than this long ago.
const Leeway = 60 * time.Second

// TokenServer issues the tokens a StartToken registry accepts.
type TokenServer struct {
	URL          string // the realm: https://127.0.0.1:PORT/token
	Service      string // the registry's service name (the tokens' audience)
	Issuer       string
	RefreshToken string // the identity token it takes for grant_type=refresh_token (what `docker login` stores)

	user, pass string
	key        *ecdsa.PrivateKey // signs the tokens
	x5c        []string          // the signing certificate, for the tokens' header

	mu       sync.Mutex
	skew     time.Duration // how far its clock is off
	lifetime time.Duration // of the tokens it issues
	log      []string
}

// StartToken runs a registry with bearer-token auth and its token server
// (TLS with the registry's certificate: 127.0.0.1, signed by the test
// CA), both until the test ends. r.User and r.Pass are the token
// server's credentials; r.Token is the server.
func StartToken(t testing.TB) *Registry {
	t.Helper()
	var ts *TokenServer
	r := start(t, func(r *Registry, dir, certFile, keyFile string) string {
		var bundle string
		ts, bundle = startTokenServer(t, r, dir, certFile, keyFile)
		return fmt.Sprintf(`auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`, ts.URL, ts.Service, ts.Issuer, bundle)
	})
	r.Token = ts
	return r
}

// startTokenServer starts the token server for r and returns it with the
// path of the root certificate bundle the registry is to trust.
func startTokenServer(t testing.TB, r *Registry, dir, certFile, keyFile string) (*TokenServer, string) {
	t.Helper()
	s := &TokenServer{
		Service:      "cimg-registrytest",
		Issuer:       "cimg-registrytest-token-server",
		RefreshToken: "refresh-" + randomHex(t, 16),
		user:         r.User,
		pass:         r.Pass,
		lifetime:     5 * time.Minute,
	}
	// Its own root for the signing key (not the TLS CA): the registry is
	// to trust this issuer's tokens, not every certificate of the test CA.
	root, rootKey := newCert(t, nil, nil, "cimg registrytest token root", true)
	leaf, leafKey := newCert(t, root, rootKey, "cimg registrytest token signer", false)
	s.key = leafKey
	s.x5c = []string{base64.StdEncoding.EncodeToString(leaf.Raw)}
	bundle := filepath.Join(dir, "token-root.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve)) // listens on 127.0.0.1
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/token"
	return s, bundle
}

// SetSkew sets its clock d off: tokens it issues from now on are dated
// by that clock. A skew of minus an hour issues tokens that expired
// before they arrive (with expires_in still saying 300 s), as a token
// server with a wrong clock does.
func (s *TokenServer) SetSkew(d time.Duration) {
	s.mu.Lock()
	s.skew = d
	s.mu.Unlock()
}

// Requests lists the requests it answered, one line each: "GET user
// scope...", "POST refresh_token scope...", with " -> 401" and the like
// when it refused.
func (s *TokenServer) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// Mint is a token for the registry's user, valid from now on for
// lifetime (a negative lifetime: expired that long ago), granting scopes
// (TYPE:NAME:ACTION,ACTION...). The tests put it where a client would
// keep one: the registrytoken of a config.json.
func (s *TokenServer) Mint(t testing.TB, lifetime time.Duration, scopes ...string) string {
	t.Helper()
	tok, err := s.sign(s.user, time.Now(), lifetime, grant(scopes))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// access is one entry of a token's access claim.
type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// grant is the access claim for scopes: all that was asked (the one user
// may do anything). Malformed scopes are left out, as the spec says.
func grant(scopes []string) []access {
	out := []access{}
	for _, sc := range scopes {
		for _, one := range strings.Fields(sc) {
			typ, rest, ok := strings.Cut(one, ":")
			i := strings.LastIndex(rest, ":")
			if !ok || i <= 0 {
				continue
			}
			out = append(out, access{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")})
		}
	}
	return out
}

// serve is the realm.
func (s *TokenServer) serve(w http.ResponseWriter, req *http.Request) {
	s.mu.Lock()
	now, lifetime := time.Now().Add(s.skew), s.lifetime
	s.mu.Unlock()
	var (
		subject string
		scopes  []string
		how     string
		oauth   = req.Method == http.MethodPost
	)
	refuse := func(code int, body string) {
		s.note(fmt.Sprintf("%s %s %s -> %d", req.Method, how, strings.Join(scopes, " "), code))
		if code == http.StatusUnauthorized && !oauth {
			w.Header().Set("WWW-Authenticate", `Basic realm="cimg-registrytest"`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintln(w, body)
	}
	switch req.Method {
	case http.MethodGet:
		// The token spec: the credentials as basic auth, the service and
		// scopes in the query; no credentials get an anonymous token
		// without access (as Docker Hub does), which the registry then
		// refuses for a private repository.
		q := req.URL.Query()
		scopes = q["scope"]
		user, pass, ok := req.BasicAuth()
		how = "anonymous"
		if ok {
			how = user
			if user != s.user || pass != s.pass {
				// Docker Hub's answer to a wrong password.
				refuse(http.StatusUnauthorized, `{"details":"incorrect username or password"}`)
				return
			}
			subject = user
		}
		if q.Get("service") != s.Service {
			refuse(http.StatusBadRequest, `{"details":"unknown service"}`)
			return
		}
	case http.MethodPost:
		// The OAuth2 form (RFC 6749 §4.3 and §6).
		if err := req.ParseForm(); err != nil {
			refuse(http.StatusBadRequest, `{"error":"invalid_request"}`)
			return
		}
		scopes = strings.Fields(req.PostForm.Get("scope"))
		how = req.PostForm.Get("grant_type")
		switch how {
		case "password":
			if req.PostForm.Get("username") != s.user || req.PostForm.Get("password") != s.pass {
				refuse(http.StatusUnauthorized, `{"error":"invalid_grant","error_description":"incorrect username or password"}`)
				return
			}
		case "refresh_token":
			if req.PostForm.Get("refresh_token") != s.RefreshToken {
				refuse(http.StatusUnauthorized, `{"error":"invalid_grant","error_description":"unknown refresh token"}`)
				return
			}
		default:
			refuse(http.StatusBadRequest, `{"error":"unsupported_grant_type"}`)
			return
		}
		if req.PostForm.Get("service") != s.Service || req.PostForm.Get("client_id") == "" {
			refuse(http.StatusBadRequest, `{"error":"invalid_request"}`)
			return
		}
		subject = s.user
	default:
		refuse(http.StatusMethodNotAllowed, `{"details":"GET or POST"}`)
		return
	}
	claim := []access{}
	if subject != "" {
		claim = grant(scopes)
	}
	tok, err := s.sign(subject, now, lifetime, claim)
	if err != nil {
		refuse(http.StatusInternalServerError, fmt.Sprintf(`{"details":%q}`, err))
		return
	}
	s.note(fmt.Sprintf("%s %s %s", req.Method, how, strings.Join(scopes, " ")))
	resp := map[string]any{
		"access_token": tok,
		"expires_in":   int(lifetime / time.Second),
		"issued_at":    now.UTC().Format(time.RFC3339),
	}
	if oauth {
		resp["refresh_token"] = s.RefreshToken
		resp["scope"] = strings.Join(scopes, " ")
	} else {
		resp["token"] = tok // the token spec's name; access_token is OAuth2's, both are sent
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func (s *TokenServer) note(line string) {
	s.mu.Lock()
	s.log = append(s.log, line)
	s.mu.Unlock()
}

// sign makes the JWT: ES256 over base64url(header).base64url(claims),
// the signature r||s of 32 bytes each (JWS, RFC 7518 §3.4).
func (s *TokenServer) sign(subject string, now time.Time, lifetime time.Duration, claim []access) (string, error) {
	header := map[string]any{"typ": "JWT", "alg": "ES256", "x5c": s.x5c}
	claims := map[string]any{
		"iss":    s.Issuer,
		"sub":    subject,
		"aud":    s.Service,
		"iat":    now.Unix(),
		"nbf":    now.Unix(),
		"exp":    now.Add(lifetime).Unix(),
		"jti":    fmt.Sprint(now.UnixNano()),
		"access": claim,
	}
	if lifetime < 0 {
		// Issued when it was still valid.
		claims["iat"] = now.Add(2 * lifetime).Unix()
		claims["nbf"] = claims["iat"]
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	sum := sha256.Sum256([]byte(input))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return input + "." + enc.EncodeToString(sig), nil
}

// newCert makes a P-256 key and a certificate for it, signed by parent
// (nil: self-signed), a CA if ca.
func newCert(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string, ca bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-2 * time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  ca,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if ca {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
