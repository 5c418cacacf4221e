// Package registrytest starts a real OCI registry for tests: Debian's
// docker-registry (the CNCF distribution registry), on 127.0.0.1 only,
// with TLS from a CA made for the test and htpasswd (bcrypt) basic auth.
// The CA is handed to clients as a file (--ca), never installed in the
// system's trust store.
package registrytest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry Debian's docker-registry package installs
// (Makefile TEST_DEPS).
const Binary = "/usr/bin/docker-registry"

// Registry is a running registry.
type Registry struct {
	Addr   string // 127.0.0.1:PORT
	CAFile string // the PEM of the CA that signed its certificate
	User   string
	Pass   string
	Dir    string // its storage
	Log    string // its log file (info level: one "response completed" line per request)
	Client *http.Client
	Token  *TokenServer // the token server of a StartToken registry; nil with basic auth
}

// Creds is USER:PASS, as --creds takes it.
func (r *Registry) Creds() string { return r.User + ":" + r.Pass }

// Manifest reads REPO's manifest (or index) REF into v and returns its
// media type.
func (r *Registry) Manifest(t testing.TB, repo, ref string, v any) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "https://"+r.Addr+"/v2/"+repo+"/manifests/"+ref, nil)
	if r.Token != nil {
		req.Header.Set("Authorization", "Bearer "+r.Token.Mint(t, time.Hour, "repository:"+repo+":pull"))
	} else {
		req.SetBasicAuth(r.User, r.Pass)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageIndex+", "+ocispec.MediaTypeImageManifest)
	resp, err := r.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s:%s: %s %s", repo, ref, resp.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
	return resp.Header.Get("Content-Type")
}

// BlobGETs lists the bytes the registry wrote for each GET of the blob
// dgst (sha256:...), from its log, oldest first: what a resumed download
// fetched.
func (r *Registry) BlobGETs(t testing.TB, dgst string) []string {
	t.Helper()
	log, err := os.ReadFile(r.Log)
	if err != nil {
		t.Fatal(err)
	}
	var written []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, `msg="response completed"`) && strings.Contains(l, "http.request.method=GET") &&
			strings.Contains(l, "/blobs/"+dgst) {
			_, w, _ := strings.Cut(l, "http.response.written=")
			w, _, _ = strings.Cut(w, " ")
			written = append(written, w)
		}
	}
	return written
}

// Start runs a registry until the test ends. A missing registry binary
// fails the test: it is a prerequisite, not an option.
func Start(t testing.TB) *Registry {
	t.Helper()
	return start(t, func(r *Registry, dir, _, _ string) string {
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(r.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(`auth:
  htpasswd:
    realm: cimg-test
    path: %s
`, htpasswd)
	})
}

// start runs the registry with the auth section of its config that
// authConf writes (given the registry, its directory and the TLS
// certificate and key made for 127.0.0.1).
func start(t testing.TB, authConf func(r *Registry, dir, certFile, keyFile string) string) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("the registry tests need %s: apt-get install docker-registry (make deps-test): %v", Binary, err)
	}
	dir := t.TempDir()
	r := &Registry{User: "cimg", Pass: "s3cret-" + fmt.Sprint(time.Now().UnixNano()%1e6), Dir: filepath.Join(dir, "storage")}
	certFile, keyFile, pool := makeCerts(t, dir)
	r.CAFile = filepath.Join(dir, "ca.pem")
	r.Addr = freeAddr(t)
	conf := filepath.Join(dir, "config.yml")
	yml := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: registrytest
  tls:
    certificate: %s
    key: %s
`, r.Dir, r.Addr, certFile, keyFile) + authConf(r, dir, certFile, keyFile)
	if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "registry.log")
	r.Log = logFile
	log, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Binary, "serve", conf)
	cmd.Stdout, cmd.Stderr = log, log
	// Dies with the test binary even if that is killed before Cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start %s: %v", Binary, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("registry log (tail):\n%s", b)
		}
	})
	r.Client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	// Up when /v2/ answers, with 401 as it has auth.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := r.Client.Get("https://" + r.Addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logFile)
			t.Fatalf("the registry exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("the registry at %s does not answer: %v\n%s", r.Addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// freeAddr is a port on 127.0.0.1 nobody listens on now.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// makeCerts writes ca.pem and a server certificate for 127.0.0.1 signed
// by it (cert.pem, key.pem) into dir.
func makeCerts(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cimg registrytest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		var b bytes.Buffer
		pem.Encode(&b, &pem.Block{Type: typ, Bytes: der})
		if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("ca.pem", "CERTIFICATE", caDER)
	certFile = write("cert.pem", "CERTIFICATE", srvDER)
	keyFile = write("key.pem", "EC PRIVATE KEY", keyDER)
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return certFile, keyFile, pool
}
