package loadgen

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// Defaults that Config applies to zero fields.
const (
	DefaultSessions       = 1000
	DefaultMinData        = 50
	DefaultMaxData        = 4096
	DefaultTimeout        = 5 * time.Second
	DefaultSessionTimeout = time.Hour
	// MaxErrorSamples is how many error messages a Report keeps verbatim;
	// beyond that errors are only counted by cause.
	MaxErrorSamples = 20
)

// MinDataLen is the smallest session Run will store. A GET response of one
// byte is always read as a status byte (see distcache.ParseResponse), so a
// one-byte session could not be told from a miss.
const MinDataLen = 2

// addOverhead is what an ADD request payload carries besides the session
// data: the timeout and id_len words.
const addOverhead = 8

// Mix holds the relative weights of the four operations, indexed by
// distcache.Op. The zero Mix means DefaultMix.
type Mix [distcache.NumOps]int

// DefaultMix is what the zero Mix means: add 1, get 3, remove 1, have 1,
// a read-heavy load that still adds and removes enough to exercise every
// answer (hit, miss, exists, not found).
var DefaultMix = Mix{distcache.OpAdd: 1, distcache.OpGet: 3, distcache.OpRemove: 1, distcache.OpHave: 1}

// ParseMix parses weights written "add=1,get=3,remove=1,have=1". Operation
// names are case-insensitive; operations left out get weight 0, so
// "get=1" is a GET-only load. At least one weight must be positive.
func ParseMix(s string) (Mix, error) {
	var m Mix
	var seen [distcache.NumOps]bool
	if strings.TrimSpace(s) == "" {
		return Mix{}, errors.New("empty mix (example: add=1,get=3,remove=1,have=1)")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return Mix{}, fmt.Errorf("mix item %q: want op=weight (example: get=3)", part)
		}
		op, err := distcache.ParseOp(strings.TrimSpace(name))
		if err != nil {
			return Mix{}, fmt.Errorf("mix item %q: %w", part, err)
		}
		if seen[op] {
			return Mix{}, fmt.Errorf("mix names %s twice", op)
		}
		seen[op] = true
		w, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil || w < 0 {
			return Mix{}, fmt.Errorf("mix item %q: weight must be a whole number >= 0", part)
		}
		m[op] = w
	}
	if m.total() == 0 {
		return Mix{}, fmt.Errorf("mix %q: every weight is 0", s)
	}
	return m, nil
}

// String writes m in the form ParseMix reads, with lower-case names and
// every operation listed.
func (m Mix) String() string {
	var b strings.Builder
	for op := distcache.Op(0); op < distcache.NumOps; op++ {
		if op > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strings.ToLower(op.String()))
		b.WriteByte('=')
		b.WriteString(strconv.Itoa(m[op]))
	}
	return b.String()
}

func (m Mix) total() int {
	t := 0
	for _, w := range m {
		t += w
	}
	return t
}

// ParseSizeRange parses a session size range "MIN-MAX" or a fixed size
// "N", as the -data flag takes it.
func ParseSizeRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(strings.TrimSpace(a)); err != nil {
		return 0, 0, fmt.Errorf("size range %q: want MIN-MAX or N, in bytes", s)
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(strings.TrimSpace(b)); err != nil {
			return 0, 0, fmt.Errorf("size range %q: want MIN-MAX or N, in bytes", s)
		}
	}
	if lo < 0 || hi < lo {
		return 0, 0, fmt.Errorf("size range %q: want 0 <= MIN <= MAX", s)
	}
	return lo, hi, nil
}

// Config describes a load. Addr and at least one of Ops and Duration are
// required; every other zero field takes the documented default.
type Config struct {
	// Addr is the server (or proxy) to load.
	Addr distcache.Addr
	// Conns is the number of workers, each with its own connection (or
	// its own stream of connections when Persistent is false). Default 1.
	Conns int
	// Persistent keeps one connection per worker for the whole run,
	// reconnecting after a failure. When false every operation opens and
	// closes its own connection, as dc_test does without -persistent, so
	// the server's (or proxy's) accept path is loaded too.
	Persistent bool
	// Pipeline is the number of requests a persistent worker keeps in
	// flight on its connection. Default 1; more than 1 requires
	// Persistent. A deep pipeline of large sessions can fill both socket
	// buffers; the per-operation Timeout then ends the stall as an error.
	Pipeline int
	// Sessions is the number of distinct session ids, split evenly
	// between the workers; it must be at least Conns. Default 1000.
	Sessions int
	// MinData and MaxData bound the size of the session data in bytes.
	// Both zero means DefaultMinData..DefaultMaxData; MaxData zero alone
	// means MinData, MinData zero alone DefaultMinData (or MaxData if
	// smaller). MinData must be at least MinDataLen, and MaxData plus
	// the ADD header and id must fit one message (32768 bytes).
	MinData, MaxData int
	// Mix weights the operations; the zero Mix is DefaultMix.
	Mix Mix
	// Ops bounds the number of operations attempted (answered or failed,
	// including failed connection attempts, so a dead server cannot keep
	// the run going forever).
	Ops int64
	// Duration bounds the time in which new operations start; requests in
	// flight at the end are still awaited (up to Timeout).
	Duration time.Duration
	// Rate limits the operations started per second over all workers;
	// 0 means as fast as the server answers.
	Rate float64
	// Seed makes the choice of operations, ids and data reproducible.
	Seed uint64
	// Timeout bounds each dial and each operation (from the write of a
	// request to the end of its response). Default DefaultTimeout.
	Timeout time.Duration
	// Verify checks every answer against a model of what the server must
	// hold, and counts every disagreement as an error.
	Verify bool
	// SessionTimeout is the timeout sent with every ADD, rounded down to
	// milliseconds; at most 7 days. Default DefaultSessionTimeout. In
	// Verify mode sessions close to expiry are no longer checked.
	SessionTimeout time.Duration
	// IDPrefix starts every session id, so that runs sharing a server do
	// not collide. Empty means a random prefix "dcload-XXXXXXXX-"; Verify
	// assumes no other client touches ids with this prefix.
	IDPrefix string
	// MaxErrors stops the run early once this many errors have occurred;
	// 0 means no limit.
	MaxErrors int64
}

// Validate reports why Run would refuse c, or nil. A command calls it to
// tell a usage error from a failed run.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns c with defaults applied, or why c is unusable.
func (c Config) withDefaults() (Config, error) {
	if c.Addr.IsZero() {
		return c, errors.New("loadgen: no server address")
	}
	if !c.Addr.CanConnect() {
		return c, fmt.Errorf("loadgen: cannot connect to %s (a connect address needs a host and a port)", c.Addr)
	}
	if c.Ops < 0 || c.Duration < 0 {
		return c, errors.New("loadgen: Ops and Duration must not be negative")
	}
	if c.Ops == 0 && c.Duration == 0 {
		return c, errors.New("loadgen: neither an operation count nor a duration bounds the run")
	}
	if c.Conns == 0 {
		c.Conns = 1
	}
	if c.Pipeline == 0 {
		c.Pipeline = 1
	}
	if c.Sessions == 0 {
		c.Sessions = max(DefaultSessions, c.Conns)
	}
	switch {
	case c.MinData == 0 && c.MaxData == 0:
		c.MinData, c.MaxData = DefaultMinData, DefaultMaxData
	case c.MaxData == 0:
		c.MaxData = c.MinData
	case c.MinData == 0:
		c.MinData = min(DefaultMinData, c.MaxData)
	}
	if c.Mix == (Mix{}) {
		c.Mix = DefaultMix
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.IDPrefix == "" {
		var b [4]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
		c.IDPrefix = "dcload-" + hex.EncodeToString(b[:]) + "-"
	}

	switch {
	case c.Conns < 0:
		return c, fmt.Errorf("loadgen: conns %d must be positive", c.Conns)
	case c.Pipeline < 0:
		return c, fmt.Errorf("loadgen: pipeline %d must be positive", c.Pipeline)
	case c.Pipeline > 1 && !c.Persistent:
		return c, fmt.Errorf("loadgen: pipeline %d needs persistent connections (one operation per connection cannot pipeline)", c.Pipeline)
	case c.Sessions < c.Conns:
		return c, fmt.Errorf("loadgen: %d sessions cannot be split between %d connections (each owns its own ids)", c.Sessions, c.Conns)
	case c.MinData < MinDataLen:
		return c, fmt.Errorf("loadgen: minimum data size %d below %d (a 1-byte GET answer reads as a status)", c.MinData, MinDataLen)
	case c.MaxData < c.MinData:
		return c, fmt.Errorf("loadgen: data size range %d-%d is empty", c.MinData, c.MaxData)
	case c.Rate < 0:
		return c, fmt.Errorf("loadgen: rate %g must not be negative", c.Rate)
	case c.Timeout < 0:
		return c, fmt.Errorf("loadgen: timeout %v must not be negative", c.Timeout)
	case c.SessionTimeout < time.Millisecond || c.SessionTimeout > distcache.MaxAddTimeoutMS*time.Millisecond:
		return c, fmt.Errorf("loadgen: session timeout %v outside 1ms..7 days", c.SessionTimeout)
	case c.MaxErrors < 0:
		return c, fmt.Errorf("loadgen: max errors %d must not be negative", c.MaxErrors)
	}
	for _, w := range c.Mix {
		if w < 0 {
			return c, fmt.Errorf("loadgen: mix %v has a negative weight", c.Mix)
		}
	}
	if idLen := len(sessionID(nil, c.IDPrefix, c.Sessions-1, c.Sessions)); idLen > distcache.MaxSessionIDLen {
		return c, fmt.Errorf("loadgen: session ids of %d bytes exceed %d; shorten the id prefix %q",
			idLen, distcache.MaxSessionIDLen, c.IDPrefix)
	} else if limit := distcache.MaxMessageData - addOverhead - idLen; c.MaxData > limit {
		// The server would accept up to 32768 bytes of data, but an ADD
		// request carries id and header in the same 32768-byte message.
		return c, fmt.Errorf("loadgen: maximum data size %d does not fit an ADD message with a %d-byte id (at most %d)",
			c.MaxData, idLen, limit)
	}
	return c, nil
}

// sessionID appends the id of session i (of n) to dst: the prefix and the
// index, zero-padded so every id of a run has the same length.
func sessionID(dst []byte, prefix string, i, n int) []byte {
	width := len(strconv.Itoa(max(n-1, 0)))
	dst = append(dst, prefix...)
	digits := strconv.Itoa(i)
	for range width - len(digits) {
		dst = append(dst, '0')
	}
	return append(dst, digits...)
}
