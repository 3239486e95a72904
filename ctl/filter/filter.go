package filter

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/vocab"
)

// ErrInvalid is wrapped by every error New returns, so a command can tell a
// bad flag value (a usage error) from anything else.
var ErrInvalid = errors.New("invalid filter")

// maxSessionPrefix is the longest session id prefix worth asking for: the
// events carry at most 64 bytes of a session id, and the daemon refuses
// longer prefixes.
const maxSessionPrefix = 64

// Options are the filter flags as the user typed them. Each slice element
// may itself be a comma-separated list.
type Options struct {
	// Proxies keeps events of these proxies.
	Proxies []string
	// Ops keeps transactions of these operations: get, add, remove, have.
	Ops []string
	// Status keeps transactions with these results (vocab names them).
	Status []string
	// Session keeps transactions whose session id starts with these
	// bytes, written in hex.
	Session string
	// MinLatency keeps transactions at least this slow.
	MinLatency time.Duration
	// Conn keeps events of this connection; 0 means every connection.
	Conn uint64
	// Errors keeps only errors (vocab says which results are).
	Errors bool
	// Events keeps events of these kinds (vocab.KindGroups names them).
	Events []string
	// Expr is a CEL expression (match.Variables lists its names).
	Expr string
	// Faults keeps transactions touched by these faults ("*": any).
	Faults []string
}

// Filter selects events: Request carries every condition to the daemon,
// which evaluates it; Match evaluates the same conditions on saved events.
type Filter struct {
	// Request is the filter part of a WatchEventsRequest (history and
	// include_data are left for the caller).
	Request *snoopv1.WatchEventsRequest
	m       *match.Matcher
}

// New checks o and builds the Filter it describes. Every error wraps
// ErrInvalid and names the flag and the values it takes.
func New(o Options) (Filter, error) {
	req := &snoopv1.WatchEventsRequest{ErrorsOnly: o.Errors, Filter: o.Expr, Faults: SplitList(o.Faults)}
	for _, p := range SplitList(o.Proxies) {
		if !slices.Contains(req.Proxies, p) {
			req.Proxies = append(req.Proxies, p)
		}
	}
	for _, s := range SplitList(o.Ops) {
		op, ok := vocab.ParseOp(s)
		if !ok {
			return Filter{}, fmt.Errorf("%w: --op %q: want one or more of %s", ErrInvalid, s, strings.Join(vocab.OpNames(), ", "))
		}
		if a := apiconv.Op(op); !slices.Contains(req.Ops, a) {
			req.Ops = append(req.Ops, a)
		}
	}
	for _, s := range SplitList(o.Status) {
		r, ok := vocab.ParseResult(s)
		if !ok {
			return Filter{}, fmt.Errorf("%w: --status %q: want one or more of %s", ErrInvalid, s, strings.Join(vocab.ResultNames(), ", "))
		}
		if !slices.Contains(req.Results, r.String()) {
			req.Results = append(req.Results, r.String())
		}
	}
	if o.Session != "" {
		p, err := ParseSessionPrefix(o.Session)
		if err != nil {
			return Filter{}, err
		}
		req.SessionIdPrefix = p
	}
	if o.MinLatency < 0 {
		return Filter{}, fmt.Errorf("%w: --min-latency %v: must not be negative", ErrInvalid, o.MinLatency)
	}
	if o.MinLatency > 0 {
		req.MinLatency = durationpb.New(o.MinLatency)
	}
	req.ConnectionId = o.Conn
	for _, s := range SplitList(o.Events) {
		kinds, ok := vocab.ParseKinds(s)
		if !ok {
			return Filter{}, fmt.Errorf("%w: --events %q: want one or more of %s", ErrInvalid, s, strings.Join(vocab.KindGroupNames(), ", "))
		}
		for _, k := range kinds {
			if a := apiconv.Kind(k); !slices.Contains(req.Kinds, a) {
				req.Kinds = append(req.Kinds, a)
			}
		}
	}
	if o.Errors && len(req.Kinds) > 0 {
		req.Kinds = slices.DeleteFunc(req.Kinds, func(k snoopv1.EventKind) bool { return !canBeError(k) })
		if len(req.Kinds) == 0 {
			return Filter{}, fmt.Errorf("%w: --errors with --events %s selects nothing: connection open and close events are never errors",
				ErrInvalid, strings.Join(SplitList(o.Events), ","))
		}
	}
	slices.Sort(req.Kinds)
	m, err := Compile(req)
	if err != nil {
		var fe *match.FieldError
		if errors.As(err, &fe) && fe.Field == "filter" {
			return Filter{}, fmt.Errorf("%w: --filter: %s", ErrInvalid, fe.Reason)
		}
		return Filter{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return Filter{Request: req, m: m}, nil
}

// Compile builds the daemon's matcher for a watch request: the same
// conversion and the same code the daemon runs.
func Compile(req *snoopv1.WatchEventsRequest) (*match.Matcher, error) {
	spec, err := apiconv.SpecFromRequest(req)
	if err != nil {
		return nil, err
	}
	return match.Compile(spec)
}

// canBeError reports whether events of kind k can be errors: every kind
// but the two connection life-cycle events.
func canBeError(k snoopv1.EventKind) bool {
	vk, ok := apiconv.KindFromAPI(k)
	return ok && (vk == vocab.KindTransaction || vk.IsError())
}

// ParseSessionPrefix reads a session id prefix in any of the forms
// snoopctl shows and prints:
//
//   - hex, as tail shows binary ids (0a1b2c, or 0x0a1b2c); the digits come
//     in pairs, since the daemon matches whole bytes;
//   - text, as tail shows printable ids (dcload-8a3f-);
//   - base64, as -o json prints session_id (ZGNsb2FkLTEyOA==), or as
//     base64:... (base64:ZGNsb2Fk);
//   - hex:... and text:... say the form outright, for a text prefix that
//     looks like hex ("text:dc").
//
// A value that looks like hex (an even number of hex digits) is hex, and
// one that looks like base64 (see looksBase64) is base64; TextForm keeps
// such ids out of the text form, so that what tail shows is always read
// back as the same bytes. A value that could be either text or base64
// gets a note from AmbiguousSession saying how it was read.
func ParseSessionPrefix(s string) ([]byte, error) {
	b, err := parseSession(s)
	if err != nil {
		return nil, err
	}
	if len(b) > maxSessionPrefix {
		return nil, fmt.Errorf("%w: --session: %d bytes; a session id has at most %d", ErrInvalid, len(b), maxSessionPrefix)
	}
	return b, nil
}

func parseSession(s string) ([]byte, error) {
	switch {
	case s == "":
		return nil, fmt.Errorf("%w: --session \"\": empty (want hex such as 0a1b2c, or text such as dcload-)", ErrInvalid)
	case strings.HasPrefix(s, "text:"):
		if s == "text:" {
			return nil, fmt.Errorf("%w: --session %q: no text after text:", ErrInvalid, s)
		}
		return []byte(s[len("text:"):]), nil
	case strings.HasPrefix(s, "base64:"):
		b, err := base64.StdEncoding.DecodeString(s[len("base64:"):])
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("%w: --session %q: not base64 (as -o json prints session_id, e.g. base64:ZGNsb2Fk)", ErrInvalid, s)
		}
		return b, nil
	case strings.HasPrefix(s, "hex:"), strings.HasPrefix(s, "0x"), strings.HasPrefix(s, "0X"):
		h := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(s, "hex:"), "0x"), "0X")
		return parseHex(s, h)
	case looksHex(s):
		return parseHex(s, s)
	case looksBase64(s):
		b, _ := base64.StdEncoding.Strict().DecodeString(s)
		return b, nil
	}
	if !printable([]byte(s)) {
		return nil, fmt.Errorf("%w: --session %q: not hex (digits 0-9 and a-f, e.g. 0a1b2c) nor printable text", ErrInvalid, s)
	}
	return []byte(s), nil
}

func parseHex(s, h string) ([]byte, error) {
	if h == "" {
		return nil, fmt.Errorf("%w: --session %q: no hex digits", ErrInvalid, s)
	}
	if len(h)%2 != 0 {
		return nil, fmt.Errorf("%w: --session %q: an odd number of hex digits; session ids match whole bytes (two digits each)", ErrInvalid, s)
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%w: --session %q: not hex (want digits 0-9 and a-f, for example 0a1b2c)", ErrInvalid, s)
	}
	return b, nil
}

// looksHex reports whether s is an even number of hex digits.
func looksHex(s string) bool {
	if len(s) == 0 || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune("0123456789abcdefABCDEF", rune(s[i])) {
			return false
		}
	}
	return true
}

// looksBase64 reports whether s reads as base64, as protojson prints a
// session id: standard base64 that ends in its = padding, or, unpadded
// (an id of 3n bytes), at least minBareBase64 characters long. A shorter
// unpadded value is read as text: a prefix typed by hand ("sess") is
// more likely than a 3-byte session id.
func looksBase64(s string) bool {
	if !strings.HasSuffix(s, "=") && len(s) < minBareBase64 {
		return false
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	return err == nil && len(b) > 0
}

const minBareBase64 = 8

// AmbiguousSession returns a note for a --session value that reads both
// as text and as unpadded base64, saying which it was taken for and how
// to write the other; "" when the value is not ambiguous.
func AmbiguousSession(s string) string {
	if s == "" || strings.Contains(s, ":") || strings.HasSuffix(s, "=") || looksHex(s) || len(s)%4 != 0 {
		return ""
	}
	if b, err := base64.StdEncoding.Strict().DecodeString(s); err != nil || len(b) == 0 {
		return ""
	}
	if looksBase64(s) {
		return fmt.Sprintf("--session %q is read as base64, as -o json prints session ids; for text write text:%s", s, s)
	}
	return fmt.Sprintf("--session %q is read as text; for base64 as -o json prints session ids, write base64:%s", s, s)
}

// printable reports whether b is all visible ASCII: no spaces, controls or
// bytes above 0x7e, so it reads and types as it is.
func printable(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return len(b) > 0
}

// TextForm reports whether a session id is shown as text: printable, and
// not mistakable for hex (ParseSessionPrefix reads text that looks like
// hex as hex).
func TextForm(id []byte) bool {
	return printable(id) && !looksHex(string(id)) && !looksBase64(string(id)) &&
		!strings.HasPrefix(string(id), "0x") && !strings.HasPrefix(string(id), "0X") &&
		!strings.HasPrefix(string(id), "hex:") && !strings.HasPrefix(string(id), "text:") && !strings.HasPrefix(string(id), "base64:")
}

// SplitList flattens flag values that may each hold a comma-separated
// list, dropping empty items, surrounding spaces and repeats; every
// comma-list flag of snoopctl goes through it.
func SplitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// Match reports whether f keeps ev, by the daemon's own rules. A Filter
// made without New keeps everything.
func (f Filter) Match(ev *snoopv1.Event) bool {
	if f.m == nil {
		return true
	}
	var v match.View
	apiconv.View(ev, ev.GetDaemon(), &v) // a fleet's events name their daemon
	return f.m.Match(&v)
}
