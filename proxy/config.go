package proxy

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// CorruptPolicy says what a proxy does with bytes that break a protocol rule.
type CorruptPolicy uint8

const (
	// CloseOnCorrupt forwards the valid bytes before the offending one,
	// then closes both sides, so a peer never sees a corrupt frame (the
	// reference server aborts on some of them). It is the default.
	CloseOnCorrupt CorruptPolicy = iota
	// PassThrough keeps forwarding unchanged bytes and stops decoding the
	// direction that broke the rule, reporting it once.
	PassThrough
	// Resync is what an Observer does, which forwards nothing: report
	// the error and hunt for the next message start in that direction.
	// It is no proxy's option.
	Resync
)

// String returns "close", "passthrough" or "resync".
func (p CorruptPolicy) String() string {
	switch p {
	case PassThrough:
		return "passthrough"
	case Resync:
		return "resync"
	}
	return "close"
}

// ParseCorruptPolicy parses "close" or "passthrough".
func ParseCorruptPolicy(s string) (CorruptPolicy, error) {
	switch s {
	case "close", "":
		return CloseOnCorrupt, nil
	case "passthrough":
		return PassThrough, nil
	}
	return 0, fmt.Errorf("unknown corrupt policy %q (want close or passthrough)", s)
}

// Defaults for Options fields left zero.
const (
	DefaultDialTimeout  = 5 * time.Second
	DefaultCaptureLimit = distcache.MaxSessionDataLen
	DefaultSocketMode   = os.FileMode(0o660)
	// DefaultSpares is how many server connections a listening proxy
	// keeps dialled ahead of its clients.
	DefaultSpares = 2
	// DefaultBufferSize is each direction's read buffer. It is small
	// because idle connections hold it; a full frame still fits.
	DefaultBufferSize = 4 << 10
	// DefaultIdleTimeout closes a connection that moved nothing either way
	// while nothing was owed.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMessageTimeout bounds how long a started message may take to
	// arrive whole.
	DefaultMessageTimeout = 30 * time.Second
	// DefaultResponseTimeout bounds how long a request waits for its
	// answer.
	DefaultResponseTimeout = 30 * time.Second
)

// Options are a proxy's settings besides its addresses. Zero values pick
// the defaults above.
type Options struct {
	OnCorrupt CorruptPolicy
	// CaptureData keeps session data (up to CaptureLimit bytes) in
	// transaction events. Off by default: in SSL/TLS caching the data
	// holds the session's master secret.
	CaptureData  bool
	CaptureLimit int
	// MaxConns bounds concurrent client connections; 0 means no bound.
	// Clients over the bound are closed at once and counted as refused.
	MaxConns    int
	DialTimeout time.Duration
	// Spares is the number of server connections dialled ahead of the
	// clients that will use them, so a client does not wait for the
	// proxy's own connect; 0 means DefaultSpares, negative means none.
	Spares int
	// SocketMode is the permission of a unix listen socket.
	SocketMode os.FileMode
	BufferSize int
	// IdleTimeout closes a connection that has moved no bytes for this
	// long while nothing is owed; MessageTimeout closes one whose started
	// message has not arrived whole within it; ResponseTimeout closes one
	// whose oldest request has waited this long for its answer (reported
	// unanswered). 0 means the default, negative means no timeout.
	IdleTimeout     time.Duration
	MessageTimeout  time.Duration
	ResponseTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.CaptureLimit <= 0 {
		o.CaptureLimit = DefaultCaptureLimit
	}
	if o.SocketMode == 0 {
		o.SocketMode = DefaultSocketMode
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.Spares == 0 {
		o.Spares = DefaultSpares
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MessageTimeout == 0 {
		o.MessageTimeout = DefaultMessageTimeout
	}
	if o.ResponseTimeout == 0 {
		o.ResponseTimeout = DefaultResponseTimeout
	}
	return o
}

// Config describes one proxy.
type Config struct {
	Name    string
	Listen  distcache.Addr
	Server  distcache.Addr
	Enabled bool
	Options Options
	// ConnIDs numbers connections; share one counter between all proxies
	// of a daemon so ids are unique within its life. Nil gives the proxy
	// a counter of its own.
	ConnIDs *atomic.Uint64
	// Engine serves the proxy's connections; share one between all proxies
	// of a daemon. Nil means DefaultEngine, the one snoopd runs (event
	// loops on Linux), made for the proxy alone when it starts listening
	// and closed when it stops.
	Engine Engine
	// Logf, if set, receives the rare lines worth a log: accepts failing
	// for want of file descriptors, and requests closed as echoes of a
	// forwarding loop (each at most one line per 10 s).
	Logf func(format string, args ...any)
	// Faults are injected into the proxy's traffic (fault.go); they need
	// the epoll engine. Proxy.SetFaults changes them.
	Faults []FaultSpec
}

// ErrInvalidConfig is wrapped by every configuration error.
var ErrInvalidConfig = errors.New("invalid proxy configuration")

// Validate checks a configuration without touching the network.
func (c Config) Validate() error {
	if err := ValidateName(c.Name); err != nil {
		return err
	}
	if c.Listen.IsZero() || !c.Listen.CanListen() {
		return fmt.Errorf("%w: proxy %q: listen address %q cannot be listened on", ErrInvalidConfig, c.Name, c.Listen)
	}
	if c.Server.IsZero() || !c.Server.CanConnect() {
		return fmt.Errorf("%w: proxy %q: server address %q cannot be connected to", ErrInvalidConfig, c.Name, c.Server)
	}
	if c.Options.MaxConns < 0 {
		return fmt.Errorf("%w: proxy %q: max connections %d is negative", ErrInvalidConfig, c.Name, c.Options.MaxConns)
	}
	if err := ValidateFaults(c.Faults); err != nil {
		return fmt.Errorf("%w: proxy %q: %w", ErrInvalidConfig, c.Name, err)
	}
	if c.Options.OnCorrupt > PassThrough {
		return fmt.Errorf("%w: proxy %q: unknown corrupt policy %d", ErrInvalidConfig, c.Name, c.Options.OnCorrupt)
	}
	return nil
}

// ValidateName checks a proxy name: 1 to 64 characters of letters, digits,
// '-', '_' and '.', starting with a letter or digit, so names are safe in
// file names, metric labels and command lines.
func ValidateName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: proxy name %q must be 1 to 64 characters", ErrInvalidConfig, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			i > 0 && (c == '-' || c == '_' || c == '.')
		if !ok {
			return fmt.Errorf("%w: proxy name %q: character %q at %d is not allowed (use letters, digits, '-', '_', '.'; start with a letter or digit)",
				ErrInvalidConfig, name, c, i)
		}
	}
	return nil
}
