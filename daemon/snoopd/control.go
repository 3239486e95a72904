package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/endpoint"
	"github.com/snoopd/snoopd/internal/listen"
)

// controlSocketMode is the mode of control sockets: only the daemon's
// user may connect, because whoever can connect controls the proxies.
const controlSocketMode = 0o600

// controlListener is an open control endpoint.
type controlListener struct {
	controlEndpoint
	l       net.Listener
	display string // the address as clients write it, port 0 resolved
}

// openControl opens every control endpoint. On error it closes the ones
// it opened (removing their sockets) and names the endpoint that failed.
func openControl(eps []controlEndpoint, log *slog.Logger) ([]*controlListener, error) {
	var out []*controlListener
	for _, ep := range eps {
		cl, err := listenControl(ep, log)
		if err != nil {
			closeControl(out)
			return nil, fmt.Errorf("control endpoint %s: %w", endpoint.Display(ep.addr), err)
		}
		out = append(out, cl)
	}
	return out, nil
}

func listenControl(ep controlEndpoint, log *slog.Logger) (*controlListener, error) {
	a := ep.addr
	if a.Network() == distcache.NetworkUnix {
		if err := socketDir(filepath.Dir(a.Path()), ep.ownDir, log); err != nil {
			return nil, err
		}
	}
	// A stale socket is replaced but a live one or any other file is
	// refused, so a second snoopd cannot take over the first one's
	// socket. TCP keeps the default keep-alive: a control client holds a
	// long watch stream whose peer may vanish.
	l, err := listen.Config{Mode: controlSocketMode}.Listen(context.Background(), a)
	if err != nil {
		return nil, err
	}
	if ta, ok := l.Addr().(*net.TCPAddr); ok {
		a = a.WithPort(ta.Port)
	}
	return &controlListener{controlEndpoint: ep, l: l, display: endpoint.Display(a)}, nil
}

// closeControl closes listeners that no server took over; closing a unix
// listener removes its socket.
func closeControl(ls []*controlListener) {
	for _, cl := range ls {
		cl.l.Close()
	}
}

// socketDir makes sure the directory of a control socket exists and is
// safe. A missing directory is created 0700. The default directory under
// /tmp (own) is checked strictly, because anyone can create a name there
// first: it must be a real directory, owned by this user, writable by
// nobody else. For any other directory, a mode that lets others replace
// the socket only draws a warning, since the operator chose it.
func socketDir(dir string, own bool, log *slog.Logger) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create socket directory: %w", err)
		}
		// MkdirAll applies the umask; set the mode exactly.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("create socket directory: %w", err)
		}
		log.Debug("created control socket directory", "dir", dir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if own {
		if !fi.IsDir() {
			return fmt.Errorf("socket directory %s is not a directory (a symbolic link is refused too); remove it, or set XDG_RUNTIME_DIR or --control", dir)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
			return fmt.Errorf("socket directory %s belongs to uid %d, not to this user (uid %d), who could then intercept the control API; remove it, or set XDG_RUNTIME_DIR or --control", dir, st.Uid, os.Getuid())
		}
		if fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("socket directory %s has mode %#o, so other users could replace the control socket; chmod 700 %s", dir, fi.Mode().Perm(), dir)
		}
		return nil
	}
	fi, err = os.Stat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		log.Warn("control socket directory is writable by other users, who could replace the socket", "dir", dir, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
	return nil
}

// maxTokenLen bounds a token file: a token travels in every call's
// header, and a large file is a mistake (a key, a log) rather than a token.
const maxTokenLen = 4096

// readToken reads a bearer token from a file that only its owner can
// read. Surrounding whitespace (the usual trailing newline) is trimmed.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("--token-file %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("--token-file %s: mode %#o lets other users read the token; chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenLen+1))
	if err != nil {
		return "", fmt.Errorf("--token-file %s: %w", path, err)
	}
	if len(b) > maxTokenLen {
		return "", fmt.Errorf("--token-file %s: longer than %d bytes; is it the right file?", path, maxTokenLen)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--token-file %s: empty; put the token in it", path)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c < 0x21 || c > 0x7e {
			return "", fmt.Errorf("--token-file %s: byte %d is not printable ASCII; a token travels in a gRPC header, so it may hold only printable ASCII without spaces", path, i)
		}
	}
	return tok, nil
}

// loadTLS builds the server's TLS configuration from the flags: TLS 1.2
// at least, and with --tls-client-ca a verified client certificate on
// every connection.
func loadTLS(o *options, log *slog.Logger) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate --tls-cert %s with key --tls-key %s: %w", o.tlsCert, o.tlsKey, err)
	}
	if fi, err := os.Stat(o.tlsKey); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the TLS private key is readable by other users", "file", o.tlsKey, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if o.tlsClientCA != "" {
		pem, err := os.ReadFile(o.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", o.tlsClientCA)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}
