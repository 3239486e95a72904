package distcache

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"

	"github.com/snoopd/snoopd/internal/clip"
)

// Network is the transport of an Addr.
type Network uint8

const (
	// NetworkTCP is a TCP stream socket: libnal "IP:" and "IPv4:" addresses,
	// plain "host:port" and "tcp://host:port".
	NetworkTCP Network = iota + 1
	// NetworkUnix is a unix domain stream socket: libnal "UNIX:" addresses,
	// "unix:path" and "unix:///path".
	NetworkUnix
)

// String returns "tcp" or "unix", which is also the network name net.Dial
// and net.Listen expect, so a.Network().String() can be passed to them
// together with a.NetAddr().
func (n Network) String() string {
	switch n {
	case NetworkTCP:
		return "tcp"
	case NetworkUnix:
		return "unix"
	}
	return "Network(" + strconv.Itoa(int(n)) + ")"
}

// ErrInvalidAddr is wrapped by every error of ParseAddr, ParseListenAddr,
// ParseConnectAddr, AddrFromNet and Addr.UnmarshalText, so callers can test
// for a bad address with errors.Is whatever the exact reason was.
var ErrInvalidAddr = errors.New("invalid address")

// addrMaxUnixPath is the longest unix socket path, in bytes, that ParseAddr
// accepts. On Linux sun_path holds 108 bytes including the terminating NUL,
// so 107 are usable; a longer path would be truncated or refused by the
// kernel only when the socket is opened, far from where it was typed.
const addrMaxUnixPath = 107

// Examples quoted in error messages. They are valid addresses themselves
// (the tests check that), so a user can copy them.
const (
	addrExampleTCP  = "IP:127.0.0.1:9001"
	addrExampleUnix = "UNIX:/run/dc.sock"
	addrExamples    = "examples: " + addrExampleTCP + ", " + addrExampleUnix
	addrPrefixList  = "use IP:, IPv4:, UNIX:, tcp:// or unix://"
	// addrExamplePort is the port used in suggested addresses when the
	// user's own port is missing or unusable. 9001 is not special to
	// distcache; it only has to look like a real port.
	addrExamplePort = 9001
	// addrMaxHostLen bounds host names: a DNS name is at most 255 bytes,
	// so anything longer is a typo or garbage and cannot resolve anyway.
	addrMaxHostLen = 255
)

// Addr is a parsed distcache endpoint address: a TCP host and port, or a
// unix socket path.
//
// The zero Addr is not a valid address (IsZero reports it). Addr values are
// comparable with ==; two Addrs are equal when they name the same endpoint
// in the same spelling (host names are kept as typed, never resolved, and
// IPv6 literals are kept without brackets).
type Addr struct {
	network Network
	host    string // TCP only; "" means every local interface
	port    int    // TCP only; 0..65535, 0 lets the OS choose on listen
	path    string // unix only; never empty for a valid unix Addr
}

// ParseAddr parses an endpoint address. It accepts the libnal forms used by
// the distcache tools and the forms users commonly type:
//
//	IP:port, IPv4:port             TCP, every local interface (listen only)
//	IP:host:port, IPv4:host:port   TCP; host is a name or an IPv4 literal
//	IP:[ipv6]:port                 TCP to an IPv6 literal
//	UNIX:path, unix:path           unix socket; path absolute or relative
//	unix:///abs/path               unix socket (the path must be absolute)
//	host:port, [ipv6]:port         TCP
//	:port                          TCP, every local interface (listen only)
//	tcp://host:port, tcp://:port   TCP
//
// Prefixes are case-insensitive. Because the libnal prefixes are tried
// first, "ip:80" and "unix:80" are libnal addresses, not hosts named "ip" or
// "unix". Port 0 is valid; it lets the OS choose when listening, but cannot
// be connected to. Unix paths longer than 107 bytes (the Linux sun_path
// limit) or containing a NUL byte are rejected; a path starting with '@' is
// a Linux abstract socket, as in package net.
//
// Every error wraps ErrInvalidAddr and says what is wrong and what a valid
// address looks like.
func ParseAddr(s string) (Addr, error) {
	if s == "" {
		return Addr{}, addrError(s, "empty address ("+addrExamples+")")
	}
	// Whitespace is never part of an address; it is almost always a stray
	// space or newline from a config file or shell quoting, and would
	// otherwise end up as part of a host name or socket path.
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return Addr{}, addrError(s, fmt.Sprintf("whitespace at byte %d (%s)", i, addrExamples))
	}
	// URL-like forms first: "tcp://...", "unix://...", and anything else
	// spelled "scheme://", which gets a clear "unknown prefix" error
	// instead of a confusing complaint about its host or port.
	if scheme, rest, ok := addrCutScheme(s); ok {
		switch {
		case strings.EqualFold(scheme, "tcp"):
			return addrParseTCP(s, rest, addrStyleURL)
		case strings.EqualFold(scheme, "unix"):
			if rest == "" {
				return Addr{}, addrError(s, "empty unix socket path (example: unix:///run/dc.sock)")
			}
			// As in gRPC, "unix://" is followed by an absolute path; a
			// relative path after it would read like a URL host.
			if rest[0] != '/' {
				return Addr{}, addrError(s, fmt.Sprintf(
					"unix:// must be followed by an absolute path (example: unix:///run/dc.sock; for a relative path write UNIX:%s)", rest))
			}
			return addrParseUnix(s, rest)
		}
		return Addr{}, addrError(s, fmt.Sprintf("unknown prefix %q (%s; example: %s)", addrClip(scheme+"://"), addrPrefixList, addrExampleTCP))
	}

	prefix, rest, found := strings.Cut(s, ":")
	if !found {
		if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
			return Addr{}, addrError(s, fmt.Sprintf("no prefix; a unix socket needs UNIX: (example: UNIX:%s)", s))
		}
		return Addr{}, addrError(s, "no port ("+addrExamples+")")
	}
	switch {
	case strings.EqualFold(prefix, "unix"):
		return addrParseUnix(s, rest)
	case strings.EqualFold(prefix, "ip"):
		return addrParseTCP(s, rest, addrStyleLibnal)
	case strings.EqualFold(prefix, "ipv4"):
		return addrParseTCP(s, rest, addrStyleLibnalV4)
	}

	// No known prefix: a plain "host:port", "[ipv6]:port" or ":port".
	if strings.HasPrefix(s, "[") || !strings.Contains(rest, ":") {
		return addrParseTCP(s, s, addrStylePlain)
	}
	// Two or more colons outside brackets: an IPv6 literal without
	// brackets, or a prefix this package does not know.
	if hint, ok := addrIPv6Hint(s, addrStylePlain); ok {
		return Addr{}, addrError(s, hint)
	}
	if prefix == "" {
		return Addr{}, addrError(s, "too many colons (example: "+addrExampleTCP+")")
	}
	example := addrExampleTCP
	if strings.EqualFold(prefix, "ipv6") {
		// libnal has no IPv6 prefix; point at the bracket syntax instead.
		example = "IP:[::1]:" + strconv.Itoa(addrExamplePort)
	}
	return Addr{}, addrError(s, fmt.Sprintf("unknown prefix %q (%s; example: %s)", addrClip(prefix), addrPrefixList, example))
}

// ParseListenAddr parses an address to listen on. Every valid address can
// be listened on, so it is ParseAddr; it exists so that call sites read
// symmetrically with ParseConnectAddr.
func ParseListenAddr(s string) (Addr, error) {
	return ParseAddr(s)
}

// ParseConnectAddr is ParseAddr, but it also rejects the addresses that can
// only be listened on: TCP addresses without a host ("IP:9001", ":9001")
// and TCP port 0. The error wraps ErrInvalidAddr and suggests a connectable
// address.
func ParseConnectAddr(s string) (Addr, error) {
	a, err := ParseAddr(s)
	if err != nil {
		return Addr{}, err
	}
	if a.network != NetworkTCP {
		return a, nil
	}
	switch {
	case a.host == "" && a.port == 0:
		return Addr{}, addrError(s, fmt.Sprintf(
			"%s can only be listened on; to connect give a host and a port: IP:host:%d", a, addrExamplePort))
	case a.host == "":
		return Addr{}, addrError(s, fmt.Sprintf(
			"%s can only be listened on; to connect give a host: IP:host:%d", a, a.port))
	case a.port == 0:
		return Addr{}, addrError(s, fmt.Sprintf(
			"port 0 can only be listened on; to connect give the server's port: %s", a.WithPort(addrExamplePort)))
	}
	return a, nil
}

// MustParseAddr is ParseAddr for addresses known to be valid, such as
// constants in tests and examples. It panics if s is invalid.
func MustParseAddr(s string) Addr {
	a, err := ParseAddr(s)
	if err != nil {
		panic("distcache: MustParseAddr: " + err.Error())
	}
	return a
}

// AddrFromNet converts the address of a socket, typically a listener's
// Addr() after listening on port 0, to an Addr. A *net.TCPAddr becomes a
// TCP Addr whose host is the IP literal (an unspecified IP such as "::"
// is kept as is; a nil IP becomes the empty host); a *net.UnixAddr of
// network "unix" becomes a unix Addr. Anything else, including unnamed unix
// sockets (the client end of a unix connection), is an error wrapping
// ErrInvalidAddr.
func AddrFromNet(na net.Addr) (Addr, error) {
	switch v := na.(type) {
	case nil:
		return Addr{}, fmt.Errorf("%w: nil net.Addr", ErrInvalidAddr)
	case *net.TCPAddr:
		if v == nil {
			return Addr{}, fmt.Errorf("%w: nil *net.TCPAddr", ErrInvalidAddr)
		}
		var host string
		if len(v.IP) != 0 {
			host = v.IP.String()
			if v.Zone != "" {
				host += "%" + v.Zone
			}
		}
		if v.Port < 0 || v.Port > 65535 {
			return Addr{}, addrNetError(na, fmt.Sprintf("port %d out of range 0-65535", v.Port))
		}
		if host != "" {
			// IP.String never yields a bad literal for a valid IP, but a
			// malformed IP (wrong length) or an odd zone would give an Addr
			// whose String does not parse back.
			if reason := addrCheckHost(host, strings.Contains(host, ":")); reason != "" {
				return Addr{}, addrNetError(na, reason)
			}
		}
		return Addr{network: NetworkTCP, host: host, port: v.Port}, nil
	case *net.UnixAddr:
		if v == nil {
			// Checked here because (*net.UnixAddr).Network panics on nil.
			return Addr{}, fmt.Errorf("%w: nil *net.UnixAddr", ErrInvalidAddr)
		}
		// distcache speaks over stream sockets only; a datagram or
		// seqpacket socket address is a caller bug, not an endpoint.
		if v.Net != "" && v.Net != "unix" {
			return Addr{}, addrNetError(na, fmt.Sprintf("network %q is not a unix stream socket", v.Net))
		}
		if reason := addrCheckUnixPath(v.Name); reason != "" {
			return Addr{}, addrNetError(na, reason)
		}
		return Addr{network: NetworkUnix, path: v.Name}, nil
	}
	return Addr{}, addrNetError(na, fmt.Sprintf("%T is not a TCP or unix socket address", na))
}

// Network returns the transport of a, or 0 for the zero Addr.
func (a Addr) Network() Network { return a.network }

// Host returns the TCP host as typed (a name, an IPv4 literal, or an IPv6
// literal without brackets). It is "" for "every local interface" and for
// unix addresses.
func (a Addr) Host() string { return a.host }

// Port returns the TCP port, 0..65535. It is 0 for unix addresses.
func (a Addr) Port() int { return a.port }

// Path returns the unix socket path, or "" for TCP addresses.
func (a Addr) Path() string { return a.path }

// IsZero reports whether a is the zero Addr, which no successful parse
// returns.
func (a Addr) IsZero() bool { return a == Addr{} }

// CanListen reports whether a can be listened on. Every valid address can:
// an empty host listens on every interface and port 0 lets the OS choose.
func (a Addr) CanListen() bool { return !a.IsZero() }

// CanConnect reports whether a can be connected to: a unix socket, or a
// TCP address with a host and a non-zero port.
func (a Addr) CanConnect() bool {
	switch a.network {
	case NetworkUnix:
		return true
	case NetworkTCP:
		return a.host != "" && a.port != 0
	}
	return false
}

// IsLoopback reports whether a stays on the local machine: unix sockets
// always do; a TCP address does when its host is "localhost" or a loopback
// IP literal. An empty host (every interface) is not loopback, because
// such a listener is reachable from other machines. Other host names are
// not resolved, so they report false.
func (a Addr) IsLoopback() bool {
	switch a.network {
	case NetworkUnix:
		return true
	case NetworkTCP:
		if a.host == "" {
			return false
		}
		if strings.EqualFold(strings.TrimSuffix(a.host, "."), "localhost") {
			return true
		}
		ip, err := netip.ParseAddr(a.host)
		// Unmap so that ::ffff:127.0.0.1 counts like 127.0.0.1.
		return err == nil && ip.Unmap().IsLoopback()
	}
	return false
}

// WithPort returns a with its TCP port replaced, keeping the host. It is
// meant for a listener opened on port 0, whose real port is known only
// after listening. Unix addresses (and the zero Addr) are returned
// unchanged. It panics if port is outside 0..65535, since such an Addr could
// not exist.
func (a Addr) WithPort(port int) Addr {
	if port < 0 || port > 65535 {
		panic(fmt.Sprintf("distcache: Addr.WithPort(%d): port out of range 0-65535", port))
	}
	if a.network == NetworkTCP {
		a.port = port
	}
	return a
}

// String returns a in libnal syntax: "IP:host:port", "IP:port" when there
// is no host, "IP:[ipv6]:port" for IPv6 literals and "UNIX:path" for unix
// sockets. The one exception is a unix path starting with "//", which is
// written "unix:////..." because "UNIX://..." would read as a unix:// URL.
// ParseAddr(a.String()) returns a for every valid a; the zero Addr gives "".
func (a Addr) String() string {
	switch a.network {
	case NetworkTCP:
		port := strconv.Itoa(a.port)
		switch {
		case a.host == "":
			return "IP:" + port
		case strings.Contains(a.host, ":"):
			return "IP:[" + a.host + "]:" + port
		}
		return "IP:" + a.host + ":" + port
	case NetworkUnix:
		if strings.HasPrefix(a.path, "//") {
			return "unix://" + a.path
		}
		return "UNIX:" + a.path
	}
	return ""
}

// NetAddr returns the address string for net.Listen and net.Dial with the
// network a.Network().String(): "host:port" (brackets around IPv6, ":port"
// without a host) for TCP, the path for unix. The zero Addr gives "".
func (a Addr) NetAddr() string {
	switch a.network {
	case NetworkTCP:
		return net.JoinHostPort(a.host, strconv.Itoa(a.port))
	case NetworkUnix:
		return a.path
	}
	return ""
}

// MarshalText implements encoding.TextMarshaler with the String form. The
// zero Addr marshals to empty text, as netip.Addr does, so that an unset
// address survives a round trip through JSON or a config file.
func (a Addr) MarshalText() ([]byte, error) {
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseAddr. Empty
// text gives the zero Addr (the mirror of MarshalText). On error *a is left
// unchanged.
func (a *Addr) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*a = Addr{}
		return nil
	}
	p, err := ParseAddr(string(text))
	if err != nil {
		return err
	}
	*a = p
	return nil
}

// addrStyle is the syntax a TCP address was written in. It decides whether
// a bare port or an empty host is allowed, and in which syntax error
// messages suggest a fix, so the suggestion looks like what the user typed.
type addrStyle uint8

const (
	addrStylePlain    addrStyle = iota // host:port, [ipv6]:port, :port
	addrStyleURL                       // tcp://host:port
	addrStyleLibnal                    // IP:...
	addrStyleLibnalV4                  // IPv4:...
)

// example renders a valid address with the given host (an empty host means
// the default 127.0.0.1) and port in style st.
func (st addrStyle) example(host string, port int) string {
	if host == "" {
		host = "127.0.0.1"
	}
	hp := net.JoinHostPort(host, strconv.Itoa(port))
	switch st {
	case addrStyleURL:
		return "tcp://" + hp
	case addrStyleLibnal:
		return "IP:" + hp
	case addrStyleLibnalV4:
		if strings.Contains(host, ":") {
			// IPv4: cannot carry an IPv6 host; suggest the IP: prefix.
			return "IP:" + hp
		}
		return "IPv4:" + hp
	}
	return hp
}

// addrParseTCP parses rest, the part of s after any prefix, as a TCP
// address written in style st. Checks run from structure (brackets,
// colons) to host to port, so the first error reported is the most basic.
func addrParseTCP(s, rest string, st addrStyle) (Addr, error) {
	libnal := st == addrStyleLibnal || st == addrStyleLibnalV4
	var host, port string
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return Addr{}, addrError(s, "missing ] after IPv6 address (example: "+st.example("::1", addrExamplePort)+")")
		}
		host = rest[1:end]
		if reason := addrCheckHost(host, true); reason != "" {
			ex := "::1"
			if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
				ex = host // "[1.2.3.4]:80": show it without the brackets
			}
			return Addr{}, addrError(s, reason+" (example: "+st.example(ex, addrExamplePort)+")")
		}
		if st == addrStyleLibnalV4 {
			return Addr{}, addrError(s, "the IPv4: prefix cannot take an IPv6 address (example: "+st.example(host, addrExamplePort)+")")
		}
		after := rest[end+1:]
		switch {
		case after == "":
			return Addr{}, addrError(s, "no port (example: "+st.example(host, addrExamplePort)+")")
		case after[0] != ':':
			return Addr{}, addrError(s, fmt.Sprintf("unexpected %q after ] (example: %s)", addrClip(after), st.example(addrClip(host), addrExamplePort)))
		}
		port = after[1:]
	} else {
		h, p, ok := strings.Cut(rest, ":")
		switch {
		case !ok && libnal:
			// libnal "IP:port": listen on every interface. If the one
			// field looks like a host rather than a port, the user most
			// likely forgot the port.
			if addrLooksLikeHost(rest) {
				return Addr{}, addrError(s, fmt.Sprintf("no port after host %q (example: %s)", addrClip(rest), st.example(addrClip(rest), addrExamplePort)))
			}
			port = rest
		case !ok:
			return Addr{}, addrError(s, "no port (example: "+st.example("", addrExamplePort)+")")
		default:
			if strings.Contains(p, ":") {
				if hint, ok := addrIPv6Hint(rest, st); ok {
					return Addr{}, addrError(s, hint)
				}
				return Addr{}, addrError(s, fmt.Sprintf(
					"too many colons (example: %s; IPv6 hosts go in brackets: %s)",
					st.example("", addrExamplePort), st.example("::1", addrExamplePort)))
			}
			if h == "" && libnal {
				// libnal spells "every interface" as IP:port; an empty
				// host between two colons is more likely a missing host.
				n, reason := addrParsePort(p)
				if reason != "" {
					n = addrExamplePort
				}
				return Addr{}, addrError(s, fmt.Sprintf(
					"empty host (example: %s, or IP:%d to listen on every interface)", st.example("", n), n))
			}
			host, port = h, p
		}
		if host != "" {
			if reason := addrCheckHost(host, false); reason != "" {
				return Addr{}, addrError(s, reason+" (example: "+st.example("", addrExamplePort)+")")
			}
		}
	}
	n, reason := addrParsePort(port)
	if reason != "" {
		return Addr{}, addrError(s, reason+" (example: "+st.example(host, addrExamplePort)+")")
	}
	return Addr{network: NetworkTCP, host: host, port: n}, nil
}

// addrParseUnix checks path (the part of s after the unix prefix).
func addrParseUnix(s, path string) (Addr, error) {
	if reason := addrCheckUnixPath(path); reason != "" {
		return Addr{}, addrError(s, reason+" (example: "+addrExampleUnix+")")
	}
	return Addr{network: NetworkUnix, path: path}, nil
}

// addrCheckUnixPath returns why path cannot name a unix socket, or "".
func addrCheckUnixPath(path string) string {
	switch {
	case path == "":
		return "empty unix socket path"
	case path == "@":
		// Package net reports an unnamed socket (the client end of a
		// connection) as "@": an abstract name of length zero, which
		// names nothing that could be dialled.
		return `unix socket path "@" names no socket (an abstract socket needs a name after @)`
	case strings.IndexByte(path, 0) >= 0:
		// The kernel reads sun_path as a C string, so a NUL would silently
		// cut the path short (Go would reject it only at listen/dial time).
		return "unix socket path contains a NUL byte"
	case len(path) > addrMaxUnixPath:
		return fmt.Sprintf("unix socket path is %d bytes, longer than the %d usable on Linux (sun_path is 108 bytes including the terminating NUL); use a shorter path",
			len(path), addrMaxUnixPath)
	}
	return ""
}

// addrParsePort parses a decimal port. It returns the port, or a reason.
// Only ASCII digits are accepted: strconv.Atoi would also take a sign.
func addrParsePort(p string) (int, string) {
	if p == "" {
		return 0, "empty port"
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return 0, fmt.Sprintf("port %q is not a number", addrClip(p))
		}
	}
	// Leading zeros are harmless ("IP:09001" is port 9001); strip them so
	// a long run of them is not mistaken for an overflow.
	digits := strings.TrimLeft(p, "0")
	if len(digits) > 5 {
		return 0, "port " + p + " out of range 0-65535"
	}
	n, _ := strconv.Atoi(digits) // at most 5 digits: cannot fail ("" is 0 below)
	if n > 65535 {
		return 0, "port " + p + " out of range 0-65535"
	}
	return n, ""
}

// addrCheckHost returns why host is not a usable TCP host, or "". A
// bracketed host must be an IPv6 literal; an unbracketed one is a DNS-style
// name or a dotted IPv4 literal. The character set is deliberately narrow
// so that String's output always parses back to the same Addr.
func addrCheckHost(host string, bracketed bool) string {
	if bracketed {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() {
			if err == nil {
				return fmt.Sprintf("brackets are only for IPv6 addresses; write %s without them", host)
			}
			return fmt.Sprintf("invalid IPv6 address %q", addrClip(host))
		}
		// Interface names are short and tame; anything else in a zone
		// (brackets, slashes, colons) would only confuse the printed form.
		for i := 0; i < len(ip.Zone()); i++ {
			if !addrHostByte(ip.Zone()[i]) {
				return fmt.Sprintf("invalid character %q in IPv6 zone %q", ip.Zone()[i], addrClip(ip.Zone()))
			}
		}
		return ""
	}
	if len(host) > addrMaxHostLen {
		return fmt.Sprintf("host is %d bytes, longer than the %d a DNS name can have", len(host), addrMaxHostLen)
	}
	numeric := true
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !addrHostByte(c) {
			return fmt.Sprintf("invalid character %q in host %q", c, addrClip(host))
		}
		if c != '.' && (c < '0' || c > '9') {
			numeric = false
		}
	}
	// All digits and dots: it can only be meant as an IPv4 literal, and a
	// malformed one ("1.2.3", "300.1.1.1") would otherwise be sent to DNS.
	if numeric {
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is4() {
			return fmt.Sprintf("invalid IPv4 address %q", addrClip(host))
		}
	}
	return ""
}

// addrHostByte reports whether c may appear in a host name: the DNS
// letters-digits-hyphen set plus '.' and '_' (used by some internal names).
func addrHostByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_'
}

// addrLooksLikeHost reports whether the single field of "IP:field" was
// meant as a host: it is a valid host containing a letter or a dot, which
// a port never does.
func addrLooksLikeHost(f string) bool {
	hostish := strings.IndexFunc(f, func(r rune) bool {
		return r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
	}) >= 0
	return hostish && addrCheckHost(f, false) == ""
}

// addrIPv6Hint recognises an IPv6 literal written without brackets, either
// followed by ":port" or alone, and returns an error reason that shows the
// bracketed form. The ":port" reading is tried first because "fe80::1:9001"
// is also a valid IPv6 address, but the user almost surely meant a port.
func addrIPv6Hint(hp string, st addrStyle) (string, bool) {
	i := strings.LastIndexByte(hp, ':')
	host, port := hp[:i], hp[i+1:]
	hostOK := addrCheckHost(host, true) == ""
	if n, reason := addrParsePort(port); hostOK && reason == "" {
		return fmt.Sprintf("IPv6 host must be in brackets (example: %s)", st.example(host, n)), true
	}
	if addrCheckHost(hp, true) == "" {
		return fmt.Sprintf("IPv6 address needs brackets and a port (example: %s)", st.example(hp, addrExamplePort)), true
	}
	if hostOK {
		return fmt.Sprintf("IPv6 host must be in brackets (example: %s)", st.example(host, addrExamplePort)), true
	}
	return "", false
}

// addrCutScheme splits "scheme://rest". The scheme must look like a URL
// scheme (a letter, then letters, digits, '+', '-' or '.'), so that a colon
// inside a unix path or an IPv6 literal is never taken for one.
func addrCutScheme(s string) (scheme, rest string, ok bool) {
	i := strings.Index(s, "://")
	if i <= 0 {
		return "", "", false
	}
	for j := 0; j < i; j++ {
		c := s[j]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (j == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return "", "", false
		}
	}
	return s[:i], s[i+3:], true
}

// addrError wraps ErrInvalidAddr with the input and a reason; reason
// carries its own example(s), chosen by the caller to fit the input.
func addrError(s, reason string) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidAddr, addrClip(s), reason)
}

// addrClip cuts an address quoted in an error to 320 bytes, more than
// the longest valid one (on a character boundary), saying how long it
// was: an error about a 3 MiB "address" need not repeat it.
func addrClip(s string) string {
	return clip.Quote(s, 320)
}

// addrNetError is addrError for AddrFromNet, whose input is a net.Addr.
func addrNetError(na net.Addr, reason string) error {
	return fmt.Errorf("%w %q (%s %T): %s", ErrInvalidAddr, na.String(), na.Network(), na, reason)
}
