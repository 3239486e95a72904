package distcache

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// FuzzParseAddr checks the parser's contract on arbitrary input: it never
// panics; an error always wraps ErrInvalidAddr and shows an example; a
// valid address round-trips through String, text marshalling and NetAddr,
// and ParseConnectAddr agrees with CanConnect.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"IP:9001", "IP:127.0.0.1:9001", "IPv4:localhost:0", "IP:[::1]:9001",
		"IP:[fe80::1%eth0]:80", "UNIX:/run/dc.sock", "unix:///run/dc.sock",
		"unix:////x", "unix:rel", "localhost:9001", "[::1]:9001", ":9001",
		"tcp://host:1", "tcp://:0", "", "foo", "UDP:x:1", "http://x:1",
		"IP:99999", "IP::1", "::1:80", "[::1", "UNIX:", "UNIX:/a\x00b",
		"IP:1.2.3:4", "IP: 1", "UNIX://x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAddr) {
				t.Fatalf("ParseAddr(%q) error %q does not wrap ErrInvalidAddr", s, err)
			}
			if !strings.Contains(err.Error(), "example") {
				t.Fatalf("ParseAddr(%q) error %q shows no example", s, err)
			}
			if !a.IsZero() {
				t.Fatalf("ParseAddr(%q) returned %#v with an error", s, a)
			}
			if _, cerr := ParseConnectAddr(s); !errors.Is(cerr, ErrInvalidAddr) {
				t.Fatalf("ParseConnectAddr(%q) = %v, but ParseAddr failed", s, cerr)
			}
			return
		}
		if a.IsZero() || !a.CanListen() {
			t.Fatalf("ParseAddr(%q) = %#v: zero or cannot listen", s, a)
		}

		str := a.String()
		if strings.IndexFunc(str, unicode.IsSpace) >= 0 {
			t.Fatalf("String() = %q contains whitespace", str)
		}
		b, err := ParseAddr(str)
		if err != nil {
			t.Fatalf("ParseAddr(%q) = %#v, but ParseAddr(String()=%q): %v", s, a, str, err)
		}
		if b != a {
			t.Fatalf("round trip of %q via %q: got %#v, want %#v", s, str, b, a)
		}
		if b.String() != str {
			t.Fatalf("String not stable: %q then %q", str, b.String())
		}

		text, err := a.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var u Addr
		if err := u.UnmarshalText(text); err != nil || u != a {
			t.Fatalf("UnmarshalText(%q) = %#v, %v; want %#v", text, u, err, a)
		}

		switch a.Network() {
		case NetworkTCP:
			if a.Path() != "" || a.Port() < 0 || a.Port() > 65535 {
				t.Fatalf("bad TCP Addr %#v", a)
			}
			host, port, err := net.SplitHostPort(a.NetAddr())
			if err != nil || host != a.Host() || port != strconv.Itoa(a.Port()) {
				t.Fatalf("NetAddr() = %q splits to %q, %q, %v; want %q, %d", a.NetAddr(), host, port, err, a.Host(), a.Port())
			}
		case NetworkUnix:
			p := a.Path()
			if p == "" || len(p) > addrMaxUnixPath || strings.IndexByte(p, 0) >= 0 || a.Host() != "" || a.Port() != 0 {
				t.Fatalf("bad unix Addr %#v", a)
			}
			if a.NetAddr() != p {
				t.Fatalf("NetAddr() = %q, want the path %q", a.NetAddr(), p)
			}
		default:
			t.Fatalf("ParseAddr(%q) network %v", s, a.Network())
		}

		c, cerr := ParseConnectAddr(s)
		if a.CanConnect() {
			if cerr != nil || c != a {
				t.Fatalf("ParseConnectAddr(%q) = %#v, %v; want %#v", s, c, cerr, a)
			}
		} else if !errors.Is(cerr, ErrInvalidAddr) {
			t.Fatalf("ParseConnectAddr(%q) = %#v, %v; want ErrInvalidAddr", s, c, cerr)
		}
	})
}
