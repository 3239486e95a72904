package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func TestTokenAuth(t *testing.T) {
	dir := tempDir(t)
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, "  s3cret-token\n", 0o600)
	sock := filepath.Join(dir, "ctl.sock")
	sd := startSnoopd(t, "--control", "unix://"+sock, "--token-file", tokenFile)
	if rec := sd.findLog("control API listening"); rec["token"] != true {
		t.Errorf("start-up log does not say a token is required: %v", rec)
	}
	conn := dial(t, unixTarget(sock))
	pc := snoopv1.NewProxyServiceClient(conn)
	ctx := withTimeout(t)

	for _, tc := range []struct {
		name string
		tok  string
		want codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"wrong token", "s3cret-tokeN", codes.Unauthenticated},
		{"padded token", " s3cret-token", codes.Unauthenticated},
		{"right token", "s3cret-token", codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx := ctx
			if tc.tok != "" {
				cctx = withToken(ctx, tc.tok)
			}
			_, err := pc.ListProxies(cctx, &snoopv1.ListProxiesRequest{})
			if got := status.Code(err); got != tc.want {
				t.Errorf("ListProxies: %v, want %v", err, tc.want)
			}
			// Streams are checked too, before the first event.
			stream, err := snoopv1.NewEventServiceClient(conn).WatchEvents(cctx, &snoopv1.WatchEventsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != codes.OK {
				if _, err := stream.Recv(); status.Code(err) != tc.want {
					t.Errorf("WatchEvents: %v, want %v", err, tc.want)
				}
			}
		})
	}
	// Health checks need no token, so supervisors can probe.
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check without a token: %v, %v", r, err)
	}
	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestBadTokenFile(t *testing.T) {
	dir := tempDir(t)
	for _, tc := range []struct {
		name, content string
		mode          uint32
		want          string
	}{
		{"group-readable", "tok\n", 0o640, "chmod 600"},
		{"world-readable", "tok\n", 0o604, "chmod 600"},
		{"empty", " \n\t\n", 0o600, "empty"},
		{"inner-space", "two words\n", 0o600, "printable ASCII"},
		{"missing", "", 0, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.mode != 0 {
				writeFile(t, path, tc.content, os.FileMode(tc.mode))
			}
			code, _, stderr := runToExit(t, "--control", "unix://"+filepath.Join(dir, "ctl.sock"), "--token-file", path)
			msg := failureLine(t, stderr)
			if code != 1 || !strings.Contains(msg, path) || !strings.Contains(msg, tc.want) {
				t.Fatalf("exit code %d, message %q; want 1 and %q", code, msg, tc.want)
			}
		})
	}
}

// TestTCPControlRefused: plain TCP is refused without --insecure, and
// with it anywhere but loopback; nothing is bound before the refusal.
func TestTCPControlRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--control", "IP:127.0.0.1:0"}, "needs TLS"},
		{[]string{"--control", "127.0.0.1:0"}, "needs TLS"},
		{[]string{"--insecure", "--control", "IP:0.0.0.0:0"}, "not one"},
		{[]string{"--insecure", "--control", "IP:0"}, "not one"},
		{[]string{"--insecure", "--control", "IP:[::]:0"}, "not one"},
		{[]string{"--insecure", "--control", "IP:cache.example.com:0"}, "not one"},
		{[]string{"--insecure", "--control", "192.0.2.1:0"}, "not one"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runToExit(t, tc.args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2:\n%s", code, stderr)
			}
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 || !strings.Contains(lines[0], tc.want) || !strings.HasPrefix(lines[0], "snoopd: --control") {
				t.Fatalf("want one line naming --control and %q, got:\n%s", tc.want, stderr)
			}
		})
	}
}

func TestInsecureLoopbackTCP(t *testing.T) {
	for _, addr := range []string{"IP:127.0.0.1:0", "localhost:0"} {
		t.Run(addr, func(t *testing.T) {
			dir := tempDir(t)
			sock := filepath.Join(dir, "ctl.sock")
			sd := startSnoopd(t, "--insecure", "--control", addr, "--control", "unix://"+sock)
			eps := sd.endpoints()
			if len(eps) != 2 {
				t.Fatalf("endpoints %q", eps)
			}
			var tcp string
			for _, ep := range eps {
				if !strings.HasPrefix(ep, "unix://") {
					tcp = ep
				}
			}
			ctx := withTimeout(t)
			conn := dial(t, tcpTarget(t, tcp))
			info, err := snoopv1.NewDaemonServiceClient(conn).GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if got := info.GetControlEndpoints(); len(got) != 2 {
				t.Errorf("GetDaemonInfo endpoints %q", got)
			}
			if code := sd.stop(); code != 0 {
				t.Fatalf("exit code %d", code)
			}
		})
	}
}

// pki is a CA with a server and a client certificate, in files.
type pki struct {
	ca              *x509.CertPool
	caFile          string
	srvCert, srvKey string
	client          tls.Certificate
	otherClient     tls.Certificate // signed by another CA
	dir             string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := tempDir(t)
	p := &pki{dir: dir, ca: x509.NewCertPool()}
	caKey, caCert, caDER := newCA(t, "snoopd test CA")
	p.ca.AddCert(caCert)
	p.caFile = filepath.Join(dir, "ca.pem")
	writeFile(t, p.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), 0o644)

	srvKey, srvDER := issue(t, caKey, caCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "snoopd"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.srvCert, p.srvKey = filepath.Join(dir, "srv.pem"), filepath.Join(dir, "srv.key")
	writeFile(t, p.srvCert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})), 0o644)
	writeFile(t, p.srvKey, keyPEM(t, srvKey), 0o600)

	cliKey, cliDER := issue(t, caKey, caCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "operator"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}

	otherKey, otherCert, _ := newCA(t, "someone else's CA")
	oKey, oDER := issue(t, otherKey, otherCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "intruder"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.otherClient = tls.Certificate{Certificate: [][]byte{oDER}, PrivateKey: oKey}
	return p
}

var serial int64

func newCA(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func issue(t *testing.T, caKey *ecdsa.PrivateKey, ca *x509.Certificate, tmpl *x509.Certificate) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func keyPEM(t *testing.T, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// tlsDial connects over TLS that trusts the test CA, presenting certs.
func (p *pki) tlsDial(t *testing.T, target string, certs ...tls.Certificate) *grpc.ClientConn {
	return dial(t, target, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: p.ca, Certificates: certs, MinVersion: tls.VersionTLS12,
	})))
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	sock := filepath.Join(p.dir, "ctl.sock")
	sd := startSnoopd(t, "--control", "IP:127.0.0.1:0", "--control", "unix://"+sock,
		"--tls-cert", p.srvCert, "--tls-key", p.srvKey, "--tls-client-ca", p.caFile)
	var tcp string
	for _, rec := range sd.logs() {
		if rec["msg"] == "control API listening" && rec["tls"] == true {
			tcp = rec["endpoint"].(string)
		}
	}
	if tcp == "" {
		t.Fatalf("no TLS endpoint logged:\n%s", sd.stderr)
	}
	target := tcpTarget(t, tcp)
	ctx := withTimeout(t)
	list := func(conn *grpc.ClientConn) error {
		_, err := snoopv1.NewProxyServiceClient(conn).ListProxies(ctx, &snoopv1.ListProxiesRequest{})
		return err
	}

	if err := list(p.tlsDial(t, target, p.client)); err != nil {
		t.Errorf("client with a certificate: %v", err)
	}
	if err := list(p.tlsDial(t, target)); status.Code(err) != codes.Unavailable {
		t.Errorf("client without a certificate: %v, want UNAVAILABLE (handshake refused)", err)
	}
	if err := list(p.tlsDial(t, target, p.otherClient)); status.Code(err) != codes.Unavailable {
		t.Errorf("client with a certificate of another CA: %v, want UNAVAILABLE", err)
	}
	if err := list(dial(t, target)); status.Code(err) != codes.Unavailable {
		t.Errorf("plain-text client: %v, want UNAVAILABLE", err)
	}
	// The unix socket stays plain: its file mode protects it.
	if err := list(dial(t, unixTarget(sock))); err != nil {
		t.Errorf("unix socket alongside TLS: %v", err)
	}
	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestServerOnlyTLS(t *testing.T) {
	p := newPKI(t)
	// With TLS, a TCP endpoint needs no --insecure.
	sd := startSnoopd(t, "--control", "IP:127.0.0.1:0", "--tls-cert", p.srvCert, "--tls-key", p.srvKey)
	target := tcpTarget(t, sd.endpoints()[0])
	ctx := withTimeout(t)
	if _, err := snoopv1.NewProxyServiceClient(p.tlsDial(t, target)).ListProxies(ctx, &snoopv1.ListProxiesRequest{}); err != nil {
		t.Errorf("TLS client without a certificate, no client CA required: %v", err)
	}
	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestBadTLSFiles(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(p.dir, "garbage.pem")
	writeFile(t, garbage, "not pem", 0o600)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"cert-without-key", []string{"--tls-cert", p.srvCert}, 2, []string{"--tls-key"}},
		{"ca-without-cert", []string{"--tls-client-ca", p.caFile}, 2, []string{"--tls-client-ca needs"}},
		{"garbage-cert", []string{"--tls-cert", garbage, "--tls-key", p.srvKey}, 1, []string{garbage, p.srvKey}},
		{"missing-key", []string{"--tls-cert", p.srvCert, "--tls-key", p.srvKey + ".nope"}, 1, []string{p.srvKey + ".nope"}},
		{"garbage-ca", []string{"--tls-cert", p.srvCert, "--tls-key", p.srvKey, "--tls-client-ca", garbage}, 1, []string{garbage, "no PEM certificate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--control", "IP:127.0.0.1:0"}, tc.args...)
			code, _, stderr := runToExit(t, args...)
			msg := failureLine(t, stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d: %s", code, tc.code, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q: %s", w, msg)
				}
			}
		})
	}
}
