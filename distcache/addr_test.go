package distcache

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/snoopd/snoopd/internal/skip"
)

func TestParseAddrValid(t *testing.T) {
	long := "/" + strings.Repeat("a", addrMaxUnixPath-1) // exactly at the limit
	tests := []struct {
		in         string
		network    Network
		host       string
		port       int
		path       string
		canConnect bool
		loopback   bool
		str        string // canonical String()
		netAddr    string
	}{
		// libnal forms, the ones the protocol requires.
		{"IP:9001", NetworkTCP, "", 9001, "", false, false, "IP:9001", ":9001"},
		{"IP:127.0.0.1:9001", NetworkTCP, "127.0.0.1", 9001, "", true, true, "IP:127.0.0.1:9001", "127.0.0.1:9001"},
		{"IP:localhost:9001", NetworkTCP, "localhost", 9001, "", true, true, "IP:localhost:9001", "localhost:9001"},
		{"IP:cache.example.com:65535", NetworkTCP, "cache.example.com", 65535, "", true, false, "IP:cache.example.com:65535", "cache.example.com:65535"},
		{"IPv4:9001", NetworkTCP, "", 9001, "", false, false, "IP:9001", ":9001"},
		{"IPv4:10.0.0.1:80", NetworkTCP, "10.0.0.1", 80, "", true, false, "IP:10.0.0.1:80", "10.0.0.1:80"},
		{"ip:localhost:1", NetworkTCP, "localhost", 1, "", true, true, "IP:localhost:1", "localhost:1"},
		{"ipv4:LocalHost:1", NetworkTCP, "LocalHost", 1, "", true, true, "IP:LocalHost:1", "LocalHost:1"},
		{"IP:0", NetworkTCP, "", 0, "", false, false, "IP:0", ":0"},
		{"IP:09001", NetworkTCP, "", 9001, "", false, false, "IP:9001", ":9001"},
		{"IP:[::1]:9001", NetworkTCP, "::1", 9001, "", true, true, "IP:[::1]:9001", "[::1]:9001"},
		{"IP:[fe80::1%eth0]:80", NetworkTCP, "fe80::1%eth0", 80, "", true, false, "IP:[fe80::1%eth0]:80", "[fe80::1%eth0]:80"},
		{"IP:[::ffff:127.0.0.1]:80", NetworkTCP, "::ffff:127.0.0.1", 80, "", true, true, "IP:[::ffff:127.0.0.1]:80", "[::ffff:127.0.0.1]:80"},
		{"IP:my_host:80", NetworkTCP, "my_host", 80, "", true, false, "IP:my_host:80", "my_host:80"},
		{"UNIX:/run/dc.sock", NetworkUnix, "", 0, "/run/dc.sock", true, true, "UNIX:/run/dc.sock", "/run/dc.sock"},
		{"unix:/run/dc.sock", NetworkUnix, "", 0, "/run/dc.sock", true, true, "UNIX:/run/dc.sock", "/run/dc.sock"},
		{"UNIX:dc.sock", NetworkUnix, "", 0, "dc.sock", true, true, "UNIX:dc.sock", "dc.sock"},
		{"UNIX:./run/dc.sock", NetworkUnix, "", 0, "./run/dc.sock", true, true, "UNIX:./run/dc.sock", "./run/dc.sock"},
		{"UNIX:a:b", NetworkUnix, "", 0, "a:b", true, true, "UNIX:a:b", "a:b"},
		{"UNIX:9001", NetworkUnix, "", 0, "9001", true, true, "UNIX:9001", "9001"},
		{"UNIX:@abstract", NetworkUnix, "", 0, "@abstract", true, true, "UNIX:@abstract", "@abstract"},
		{"UNIX:" + long, NetworkUnix, "", 0, long, true, true, "UNIX:" + long, long},
		// URL-like unix forms.
		{"unix:///run/dc.sock", NetworkUnix, "", 0, "/run/dc.sock", true, true, "UNIX:/run/dc.sock", "/run/dc.sock"},
		{"UNIX:///run/dc.sock", NetworkUnix, "", 0, "/run/dc.sock", true, true, "UNIX:/run/dc.sock", "/run/dc.sock"},
		{"unix:////srv//dc.sock", NetworkUnix, "", 0, "//srv//dc.sock", true, true, "unix:////srv//dc.sock", "//srv//dc.sock"},
		{"unix:/a://b", NetworkUnix, "", 0, "/a://b", true, true, "UNIX:/a://b", "/a://b"},
		// Plain forms users type.
		{"localhost:9001", NetworkTCP, "localhost", 9001, "", true, true, "IP:localhost:9001", "localhost:9001"},
		{"localhost:0", NetworkTCP, "localhost", 0, "", false, true, "IP:localhost:0", "localhost:0"},
		{"127.0.0.1:9001", NetworkTCP, "127.0.0.1", 9001, "", true, true, "IP:127.0.0.1:9001", "127.0.0.1:9001"},
		{"192.0.2.7:9001", NetworkTCP, "192.0.2.7", 9001, "", true, false, "IP:192.0.2.7:9001", "192.0.2.7:9001"},
		{"[::1]:9001", NetworkTCP, "::1", 9001, "", true, true, "IP:[::1]:9001", "[::1]:9001"},
		{"[2001:db8::1]:443", NetworkTCP, "2001:db8::1", 443, "", true, false, "IP:[2001:db8::1]:443", "[2001:db8::1]:443"},
		{":9001", NetworkTCP, "", 9001, "", false, false, "IP:9001", ":9001"},
		{":0", NetworkTCP, "", 0, "", false, false, "IP:0", ":0"},
		{"tcp://localhost:9001", NetworkTCP, "localhost", 9001, "", true, true, "IP:localhost:9001", "localhost:9001"},
		{"TCP://127.0.0.1:1", NetworkTCP, "127.0.0.1", 1, "", true, true, "IP:127.0.0.1:1", "127.0.0.1:1"},
		{"tcp://:9001", NetworkTCP, "", 9001, "", false, false, "IP:9001", ":9001"},
		{"tcp://[::1]:9001", NetworkTCP, "::1", 9001, "", true, true, "IP:[::1]:9001", "[::1]:9001"},
		{"tcp://unix:80", NetworkTCP, "unix", 80, "", true, false, "IP:unix:80", "unix:80"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := ParseAddr(tt.in)
			if err != nil {
				t.Fatalf("ParseAddr(%q): %v", tt.in, err)
			}
			if got := a.Network(); got != tt.network {
				t.Errorf("Network() = %v, want %v", got, tt.network)
			}
			if got := a.Host(); got != tt.host {
				t.Errorf("Host() = %q, want %q", got, tt.host)
			}
			if got := a.Port(); got != tt.port {
				t.Errorf("Port() = %d, want %d", got, tt.port)
			}
			if got := a.Path(); got != tt.path {
				t.Errorf("Path() = %q, want %q", got, tt.path)
			}
			if !a.CanListen() {
				t.Errorf("CanListen() = false, want true")
			}
			if got := a.CanConnect(); got != tt.canConnect {
				t.Errorf("CanConnect() = %v, want %v", got, tt.canConnect)
			}
			if got := a.IsLoopback(); got != tt.loopback {
				t.Errorf("IsLoopback() = %v, want %v", got, tt.loopback)
			}
			if a.IsZero() {
				t.Errorf("IsZero() = true for a valid address")
			}
			if got := a.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			if got := a.NetAddr(); got != tt.netAddr {
				t.Errorf("NetAddr() = %q, want %q", got, tt.netAddr)
			}
			if b, err := ParseAddr(a.String()); err != nil || b != a {
				t.Errorf("ParseAddr(String()=%q) = %#v, %v; want %#v", a.String(), b, err, a)
			}
			l, err := ParseListenAddr(tt.in)
			if err != nil || l != a {
				t.Errorf("ParseListenAddr = %#v, %v; want %#v", l, err, a)
			}
			c, err := ParseConnectAddr(tt.in)
			if tt.canConnect {
				if err != nil || c != a {
					t.Errorf("ParseConnectAddr = %#v, %v; want %#v", c, err, a)
				}
			} else if !errors.Is(err, ErrInvalidAddr) || !c.IsZero() {
				t.Errorf("ParseConnectAddr = %#v, %v; want zero Addr and ErrInvalidAddr", c, err)
			}
		})
	}
}

func TestParseAddrInvalid(t *testing.T) {
	tooLong := "/" + strings.Repeat("a", addrMaxUnixPath) // one byte over
	tests := []struct {
		in     string
		reason string // must appear in the error message
	}{
		{"", "empty address"},
		{"foo", "no port"},
		{"localhost", "no port"},
		{"/run/dc.sock", "UNIX:/run/dc.sock"},
		{"UDP:1.2.3.4:5", `unknown prefix "UDP" (use IP:, IPv4:, UNIX:, tcp:// or unix://`},
		{"UDP:x:1", `unknown prefix "UDP"`},
		{"IPv6:[::1]:1", `unknown prefix "IPv6"`},
		{"http://x:1", `unknown prefix "http://"`},
		{"ip://x:1", `unknown prefix "ip://"`},
		{"IP:", "empty port"},
		{"IP:localhost:", "empty port"},
		{":", "empty port"},
		{"localhost:", "empty port"},
		{"tcp://", "no port"},
		{"tcp://localhost", "no port"},
		{"IP:abc:x", `port "x" is not a number`},
		{"IP:-1", `port "-1" is not a number`},
		{"IP:+80", `port "+80" is not a number`},
		{"localhost:http", `port "http" is not a number`},
		{"IP:99999", "port 99999 out of range 0-65535"},
		{"IP:65536", "port 65536 out of range 0-65535"},
		{"IP:localhost:99999999999999999999999", "out of range 0-65535"},
		{"[::1]:70000", "port 70000 out of range"},
		{"IP:localhost", `no port after host "localhost"`},
		{"IP:10.0.0.1", `no port after host "10.0.0.1"`},
		{"IP::9001", "empty host"},
		{"IPv4::9001", "empty host"},
		{"IP::abc", "empty host (example: IP:127.0.0.1:9001, or IP:9001 to listen"},
		{"IP:a:b:c", "too many colons"},
		{":a:b", "too many colons"},
		{"::1:9001", "IPv6"},
		{"fe80::1:9001", "IPv6 host must be in brackets (example: [fe80::1]:9001)"},
		{"2001:db8::1:99999", "IPv6 host must be in brackets (example: [2001:db8::1]:9001)"},
		{"::1", "IPv6 address needs brackets and a port (example: [::1]:9001)"},
		{"IP:::1", "IPv6 address needs brackets and a port (example: IP:[::1]:9001)"},
		{"IPv4:::1:80", "IPv6 host must be in brackets (example: IP:[::1]:80)"},
		{"UNIX:@", "names no socket"},
		{"IP:::1:9001", "IPv6"},
		{"IP:[::1]", "no port"},
		{"[::1]", "no port"},
		{"[::1", "missing ]"},
		{"IP:[::1]9001", `unexpected "9001" after ]`},
		{"[1.2.3.4]:80", "brackets are only for IPv6 addresses; write 1.2.3.4 without them (example: 1.2.3.4:9001)"},
		{"[foo]:80", `invalid IPv6 address "foo"`},
		{"[]:80", "invalid IPv6 address"},
		{"[fe80::1%a/b]:80", "invalid character"},
		{"IPv4:[::1]:80", "IPv4: prefix cannot take an IPv6 address"},
		{"IP:ho/st:80", "invalid character '/'"},
		{"IP:h%t:80", "invalid character '%'"},
		{"IP:1.2.3:80", `invalid IPv4 address "1.2.3"`},
		{"IP:300.1.1.1:80", "invalid IPv4 address"},
		{"IP:" + strings.Repeat("a", 256) + ":80", "longer than the 255"},
		{"UNIX:", "empty unix socket path"},
		{"unix://", "empty unix socket path"},
		{"unix://run/dc.sock", "unix:// must be followed by an absolute path"},
		{"UNIX://run/dc.sock", "absolute path"},
		{"UNIX:/run/\x00dc.sock", "NUL byte"},
		{"UNIX:" + tooLong, "108 bytes including the terminating NUL"},
		{"UNIX:" + tooLong, fmt.Sprintf("%d bytes, longer than the 107", len(tooLong))},
		{" IP:9001", "whitespace"},
		{"IP:9001\n", "whitespace"},
		{"IP:local host:1", "whitespace"},
		{"UNIX:/run/dc sock", "whitespace"},
		{"IP:9001\u00a0", "whitespace"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := ParseAddr(tt.in)
			if err == nil {
				t.Fatalf("ParseAddr(%q) = %#v, want an error", tt.in, a)
			}
			if !a.IsZero() {
				t.Errorf("ParseAddr(%q) returned %#v with its error, want the zero Addr", tt.in, a)
			}
			if !errors.Is(err, ErrInvalidAddr) {
				t.Errorf("error %q does not wrap ErrInvalidAddr", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.reason) {
				t.Errorf("error %q does not contain the reason %q", msg, tt.reason)
			}
			if !strings.Contains(msg, "example") {
				t.Errorf("error %q shows no example", msg)
			}
			if want := "invalid address " + strconv.Quote(tt.in) + ": "; !strings.HasPrefix(msg, want) {
				t.Errorf("error %q does not start with %q", msg, want)
			}
			checkExamplesValid(t, msg)
			// The other entry points agree.
			if _, err := ParseListenAddr(tt.in); !errors.Is(err, ErrInvalidAddr) {
				t.Errorf("ParseListenAddr(%q) error = %v", tt.in, err)
			}
			if _, err := ParseConnectAddr(tt.in); !errors.Is(err, ErrInvalidAddr) {
				t.Errorf("ParseConnectAddr(%q) error = %v", tt.in, err)
			}
		})
	}
}

// checkExamplesValid checks that the addresses an error message suggests
// after "example: " / "examples: " parse, so the advice can be copied.
func checkExamplesValid(t *testing.T, msg string) {
	t.Helper()
	for _, marker := range []string{"example: ", "examples: "} {
		rest := msg
		for {
			i := strings.Index(rest, marker)
			if i < 0 {
				break
			}
			rest = rest[i+len(marker):]
			list := rest
			if j := strings.IndexAny(list, ");"); j >= 0 {
				list = list[:j]
			}
			for _, ex := range strings.Split(list, ", ") {
				ex = strings.TrimSuffix(ex, ",")
				if strings.HasPrefix(ex, "or ") { // "..., or IP:9001 to listen ..."
					ex = strings.Fields(ex)[1]
				}
				if _, err := ParseAddr(ex); err != nil {
					t.Errorf("message %q suggests %q, which is invalid: %v", msg, ex, err)
				}
			}
		}
	}
}

func TestParseConnectAddrErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"IP:9001", `invalid address "IP:9001": IP:9001 can only be listened on; to connect give a host: IP:host:9001`},
		{":9001", `invalid address ":9001": IP:9001 can only be listened on; to connect give a host: IP:host:9001`},
		{"tcp://:9001", "IP:9001 can only be listened on; to connect give a host: IP:host:9001"},
		{"IP:0", "IP:0 can only be listened on; to connect give a host and a port: IP:host:9001"},
		{"localhost:0", "port 0 can only be listened on; to connect give the server's port: IP:localhost:9001"},
		{"IP:[::1]:0", "port 0 can only be listened on; to connect give the server's port: IP:[::1]:9001"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := ParseConnectAddr(tt.in)
			if !errors.Is(err, ErrInvalidAddr) {
				t.Fatalf("ParseConnectAddr(%q) = %#v, %v; want ErrInvalidAddr", tt.in, a, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !a.IsZero() {
				t.Errorf("got %#v with the error, want the zero Addr", a)
			}
			// The address is still fine for listening.
			if _, err := ParseListenAddr(tt.in); err != nil {
				t.Errorf("ParseListenAddr(%q): %v", tt.in, err)
			}
		})
	}
}

// TestAddrRoundTripRandom is a property test: for many generated addresses,
// in every input syntax, parsing yields the generated fields and
// ParseAddr(a.String()) == a.
func TestAddrRoundTripRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(0x5eed, 0xd15c))
	for i := 0; i < 5000; i++ {
		in, want := randomAddrInput(rng)
		a, err := ParseAddr(in)
		if err != nil {
			t.Fatalf("ParseAddr(%q): %v", in, err)
		}
		if a != want {
			t.Fatalf("ParseAddr(%q) = %#v, want %#v", in, a, want)
		}
		s := a.String()
		b, err := ParseAddr(s)
		if err != nil {
			t.Fatalf("ParseAddr(String()=%q) from %q: %v", s, in, err)
		}
		if b != a {
			t.Fatalf("ParseAddr(%q) = %#v, want %#v (input %q)", s, b, a, in)
		}
		if b.String() != s {
			t.Fatalf("String not stable: %q then %q", s, b.String())
		}
	}
}

// randomAddrInput returns a random valid address in a random syntax, and
// the Addr it must parse to.
func randomAddrInput(rng *rand.Rand) (string, Addr) {
	if rng.IntN(4) == 0 {
		path := randomUnixPath(rng)
		want := Addr{network: NetworkUnix, path: path}
		if path[0] == '/' && rng.IntN(2) == 0 {
			return "unix://" + path, want
		}
		if strings.HasPrefix(path, "//") {
			// "UNIX://x" reads as the unix:// URL form; documented.
			return "unix://" + path, want
		}
		return []string{"UNIX:", "unix:", "Unix:"}[rng.IntN(3)] + path, want
	}
	port := rng.IntN(65536)
	var host string
	switch rng.IntN(5) {
	case 0: // every interface
	case 1:
		host = netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}).String()
	case 2:
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(4) == 0 {
			b = [16]byte{} // many zeros exercise the "::" forms
			b[15] = byte(rng.IntN(3))
		}
		ip := netip.AddrFrom16(b)
		if rng.IntN(5) == 0 {
			ip = ip.WithZone("eth" + strconv.Itoa(rng.IntN(10)))
		}
		host = ip.String()
	default:
		const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
		labels := make([]string, 1+rng.IntN(3))
		for i := range labels {
			l := make([]byte, 1+rng.IntN(12))
			for j := range l {
				l[j] = chars[rng.IntN(len(chars))]
			}
			labels[i] = string(l)
		}
		host = strings.Join(labels, ".")
		if strings.Trim(host, "0123456789.") == "" {
			host = "h" + host // all digits would have to be a valid IPv4
		}
	}
	want := Addr{network: NetworkTCP, host: host, port: port}
	p := strconv.Itoa(port)
	if rng.IntN(10) == 0 {
		p = "00" + p // leading zeros are accepted and dropped
	}
	hp := host + ":" + p
	if strings.Contains(host, ":") {
		hp = "[" + host + "]:" + p
	}
	switch rng.IntN(4) {
	case 0:
		if host == "" {
			return "IP:" + p, want
		}
		return "IP:" + hp, want
	case 1:
		if strings.Contains(host, ":") {
			return "ip:" + hp, want
		}
		if host == "" {
			return "IPv4:" + p, want
		}
		return "IPv4:" + hp, want
	case 2:
		return "tcp://" + hp, want
	}
	return hp, want
}

func randomUnixPath(rng *rand.Rand) string {
	// Printable ASCII without space, plus a multi-byte letter; ':' and '/'
	// are frequent on purpose, they are what could confuse the parser.
	const chars = "abc/:/:.@_-!#$%&'()*+,;<=>?[]^`{|}~é0123456789ABC"
	n := 1 + rng.IntN(addrMaxUnixPath)
	var b strings.Builder
	for b.Len() < n {
		r := []rune(chars)[rng.IntN(len([]rune(chars)))]
		if b.Len()+len(string(r)) > n {
			break
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return "x"
	}
	return b.String()
}

func TestAddrFromNetTCP(t *testing.T) {
	la, err := ParseListenAddr("IP:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen(la.Network().String(), la.NetAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	a, err := AddrFromNet(l.Addr())
	if err != nil {
		t.Fatalf("AddrFromNet(%v): %v", l.Addr(), err)
	}
	wantPort := l.Addr().(*net.TCPAddr).Port
	if a.Network() != NetworkTCP || a.Host() != "127.0.0.1" || a.Port() != wantPort {
		t.Fatalf("AddrFromNet(%v) = %#v", l.Addr(), a)
	}
	if !a.CanConnect() || !a.IsLoopback() {
		t.Errorf("CanConnect=%v IsLoopback=%v, want both true", a.CanConnect(), a.IsLoopback())
	}
	// The usual flow: listen on port 0, then patch in the real port.
	if got := la.WithPort(wantPort); got != a {
		t.Errorf("WithPort(%d) = %#v, want %#v", wantPort, got, a)
	}
	if b, err := ParseConnectAddr(a.String()); err != nil || b != a {
		t.Errorf("ParseConnectAddr(%q) = %#v, %v", a.String(), b, err)
	}
	dialAndAccept(t, l, a)
}

func TestAddrFromNetTCP6(t *testing.T) {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		skip.Missing(t, "IPv6 loopback: %v", err)
	}
	defer l.Close()
	a, err := AddrFromNet(l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if a.Host() != "::1" || a.Port() != port || a.String() != "IP:[::1]:"+strconv.Itoa(port) {
		t.Fatalf("AddrFromNet(%v) = %#v (%s)", l.Addr(), a, a)
	}
	dialAndAccept(t, l, a)
}

func TestAddrFromNetUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dc.sock")
	if len(path) > addrMaxUnixPath {
		skip.Missing(t, "a short temporary directory: %s is too long for a unix socket", path)
	}
	la, err := ParseListenAddr("UNIX:" + path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen(la.Network().String(), la.NetAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	a, err := AddrFromNet(l.Addr())
	if err != nil {
		t.Fatalf("AddrFromNet(%v): %v", l.Addr(), err)
	}
	if a != la {
		t.Fatalf("AddrFromNet(%v) = %#v, want %#v", l.Addr(), a, la)
	}
	if !a.CanConnect() || !a.IsLoopback() || a.Path() != path {
		t.Errorf("got %#v: CanConnect=%v IsLoopback=%v", a, a.CanConnect(), a.IsLoopback())
	}
	if got := a.WithPort(1234); got != a {
		t.Errorf("WithPort on a unix Addr changed it: %#v", got)
	}
	c := dialAndAccept(t, l, a)
	// The client end of a unix connection has no name: not an endpoint.
	if _, err := AddrFromNet(c.LocalAddr()); !errors.Is(err, ErrInvalidAddr) {
		t.Errorf("AddrFromNet(unnamed %#v) error = %v, want ErrInvalidAddr", c.LocalAddr(), err)
	}
}

// dialAndAccept dials a (proving NetAddr and Network feed net.Dial
// correctly), accepts the connection on l, and returns the client end,
// which is closed when the test ends.
func dialAndAccept(t *testing.T, l net.Listener, a Addr) net.Conn {
	t.Helper()
	c, err := net.Dial(a.Network().String(), a.NetAddr())
	if err != nil {
		t.Fatalf("Dial(%s, %s): %v", a.Network(), a.NetAddr(), err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	s.Close()
	return c
}

func TestAddrFromNetErrors(t *testing.T) {
	var nilTCP *net.TCPAddr
	var nilUnix *net.UnixAddr
	tests := []net.Addr{
		nil,
		nilTCP,
		nilUnix,
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53},
		&net.UnixAddr{Name: "/run/dc.sock", Net: "unixgram"},
		&net.UnixAddr{Name: "", Net: "unix"},
		&net.UnixAddr{Name: "/" + strings.Repeat("x", addrMaxUnixPath), Net: "unix"},
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 70000},
		&net.TCPAddr{IP: net.IP{1, 2, 3}, Port: 1},
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "a/b", Port: 1},
	}
	for _, na := range tests {
		if a, err := AddrFromNet(na); !errors.Is(err, ErrInvalidAddr) {
			t.Errorf("AddrFromNet(%#v) = %#v, %v; want ErrInvalidAddr", na, a, err)
		}
	}
	// Accepted edge cases: an unspecified IP is kept, a nil IP is "any".
	a, err := AddrFromNet(&net.TCPAddr{IP: net.IPv6unspecified, Port: 9001})
	if err != nil || a.Host() != "::" || a.String() != "IP:[::]:9001" {
		t.Errorf("AddrFromNet([::]:9001) = %#v, %v", a, err)
	}
	a, err = AddrFromNet(&net.TCPAddr{Port: 9001})
	if err != nil || a != MustParseAddr("IP:9001") {
		t.Errorf("AddrFromNet(:9001) = %#v, %v", a, err)
	}
	a, err = AddrFromNet(&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0", Port: 80})
	if err != nil || a != MustParseAddr("IP:[fe80::1%eth0]:80") {
		t.Errorf("AddrFromNet(fe80::1%%eth0) = %#v, %v", a, err)
	}
}

func TestAddrMarshalText(t *testing.T) {
	for _, s := range []string{"IP:127.0.0.1:9001", "IP:9001", "IP:[::1]:1", "UNIX:/run/dc.sock", "unix:////x"} {
		a := MustParseAddr(s)
		text, err := a.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		if string(text) != a.String() {
			t.Errorf("MarshalText = %q, want %q", text, a.String())
		}
		var b Addr
		if err := b.UnmarshalText(text); err != nil || b != a {
			t.Errorf("UnmarshalText(%q) = %#v, %v; want %#v", text, b, err, a)
		}
	}

	// Through encoding/json, as in a config file, including the zero Addr.
	type config struct {
		Listen  Addr `json:"listen"`
		Server  Addr `json:"server"`
		Missing Addr `json:"missing"`
	}
	in := config{Listen: MustParseAddr(":9001"), Server: MustParseAddr("unix:///run/dc.sock")}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"listen":"IP:9001","server":"UNIX:/run/dc.sock","missing":""}`; string(data) != want {
		t.Errorf("json = %s, want %s", data, want)
	}
	var out config
	if err := json.Unmarshal(data, &out); err != nil || out != in {
		t.Errorf("json round trip = %#v, %v; want %#v", out, err, in)
	}

	// A bad address is an ErrInvalidAddr and leaves the target unchanged.
	keep := MustParseAddr("IP:localhost:1")
	b := keep
	if err := b.UnmarshalText([]byte("IP:99999")); !errors.Is(err, ErrInvalidAddr) {
		t.Errorf("UnmarshalText(IP:99999) error = %v", err)
	}
	if b != keep {
		t.Errorf("UnmarshalText changed the Addr on error: %#v", b)
	}
	if err := json.Unmarshal([]byte(`{"listen":"foo"}`), &out); !errors.Is(err, ErrInvalidAddr) {
		t.Errorf("json.Unmarshal(foo) error = %v, want ErrInvalidAddr", err)
	}
}

func TestAddrZero(t *testing.T) {
	var a Addr
	if !a.IsZero() || a.CanListen() || a.CanConnect() || a.IsLoopback() {
		t.Errorf("zero Addr: IsZero=%v CanListen=%v CanConnect=%v IsLoopback=%v",
			a.IsZero(), a.CanListen(), a.CanConnect(), a.IsLoopback())
	}
	if a.String() != "" || a.NetAddr() != "" || a.Network() != 0 {
		t.Errorf("zero Addr: String=%q NetAddr=%q Network=%v", a.String(), a.NetAddr(), a.Network())
	}
	if a.WithPort(1) != a {
		t.Errorf("WithPort changed the zero Addr")
	}
}

func TestAddrWithPort(t *testing.T) {
	a := MustParseAddr("IP:[::1]:0").WithPort(9001)
	if a != MustParseAddr("[::1]:9001") {
		t.Errorf("WithPort = %#v", a)
	}
	if got := MustParseAddr("IP:0").WithPort(65535).String(); got != "IP:65535" {
		t.Errorf("WithPort(65535).String() = %q", got)
	}
	for _, p := range []int{-1, 65536} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("WithPort(%d) did not panic", p)
				}
			}()
			MustParseAddr("IP:0").WithPort(p)
		}()
	}
}

func TestAddrIsLoopback(t *testing.T) {
	tests := map[string]bool{
		"IP:localhost:1":          true,
		"IP:LOCALHOST:1":          true,
		"IP:localhost.:1":         true,
		"IP:127.0.0.1:1":          true,
		"IP:127.1.2.3:1":          true,
		"IP:[::1]:1":              true,
		"IP:[::ffff:127.0.0.1]:1": true,
		"UNIX:/run/dc.sock":       true,
		"IP:9001":                 false,
		"IP:0.0.0.0:1":            false,
		"IP:[::]:1":               false,
		"IP:10.0.0.1:1":           false,
		"IP:localhost.example:1":  false,
		"IP:cache.example.com:1":  false,
	}
	for s, want := range tests {
		if got := MustParseAddr(s).IsLoopback(); got != want {
			t.Errorf("%s: IsLoopback() = %v, want %v", s, got, want)
		}
	}
}

func TestAddrNetworkString(t *testing.T) {
	if NetworkTCP.String() != "tcp" || NetworkUnix.String() != "unix" || Network(0).String() != "Network(0)" {
		t.Errorf("Network strings: %q %q %q", NetworkTCP, NetworkUnix, Network(0))
	}
}

func TestMustParseAddrPanics(t *testing.T) {
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(fmt.Sprint(r), "no port") {
			t.Errorf("MustParseAddr(foo) panic = %v", r)
		}
	}()
	MustParseAddr("foo")
}
