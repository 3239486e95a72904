package filter

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"google.golang.org/protobuf/types/known/durationpb"
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
	// Status keeps transactions with these results (Results lists them).
	Status []string
	// Session keeps transactions whose session id starts with these
	// bytes, written in hex.
	Session string
	// MinLatency keeps transactions at least this slow.
	MinLatency time.Duration
	// Conn keeps events of this connection; 0 means every connection.
	Conn uint64
	// Errors keeps only errors (see IsError).
	Errors bool
	// Events keeps events of these kinds (EventNames lists them).
	Events []string
}

// Results are the transaction results the API defines, in its order.
var Results = []string{"ok", "notok", "hit", "miss", "exists", "timeout-range", "id-range",
	"data-range", "corrupt", "disconnected", "malformed", "unknown-status", "unanswered", "orphan"}

// EventNames are the names --events takes, with the kinds each selects.
var EventNames = []struct {
	Name  string
	Kinds []snoopv1.EventKind
}{
	{"tx", []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION}},
	{"conn", []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED}},
	{"opened", []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED}},
	{"closed", []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED}},
	{"connect-failed", []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED}},
	{"refused", []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED}},
	{"protocol", []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR}},
}

// OpNames are the names --op takes, in protocol order.
var OpNames = []string{"add", "get", "remove", "have"}

// errorKinds are the kinds that can be an error: every kind but the two
// connection life-cycle events.
var errorKinds = []snoopv1.EventKind{
	snoopv1.EventKind_EVENT_KIND_TRANSACTION,
	snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED,
	snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED,
	snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR,
}

// Filter selects events. Request carries every condition the daemon can
// evaluate; ErrorsOnly narrows the result further, on the client.
type Filter struct {
	// Request is the filter part of a WatchEventsRequest (history and
	// include_data are left for the caller).
	Request *snoopv1.WatchEventsRequest
	// ErrorsOnly keeps only events for which IsError is true.
	ErrorsOnly bool
}

// New checks o and builds the Filter it describes. Every error wraps
// ErrInvalid and names the flag and the values it takes.
func New(o Options) (Filter, error) {
	req := &snoopv1.WatchEventsRequest{}
	for _, p := range splitList(o.Proxies) {
		if !slices.Contains(req.Proxies, p) {
			req.Proxies = append(req.Proxies, p)
		}
	}
	for _, s := range splitList(o.Ops) {
		op, ok := ParseOp(s)
		if !ok {
			return Filter{}, fmt.Errorf("%w: --op %q: want one or more of %s", ErrInvalid, s, strings.Join(OpNames, ", "))
		}
		if !slices.Contains(req.Ops, op) {
			req.Ops = append(req.Ops, op)
		}
	}
	for _, s := range splitList(o.Status) {
		r := strings.ToLower(s)
		if !slices.Contains(Results, r) {
			return Filter{}, fmt.Errorf("%w: --status %q: want one or more of %s", ErrInvalid, s, strings.Join(Results, ", "))
		}
		if !slices.Contains(req.Results, r) {
			req.Results = append(req.Results, r)
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
	for _, s := range splitList(o.Events) {
		kinds, ok := eventKinds(s)
		if !ok {
			names := make([]string, len(EventNames))
			for i, n := range EventNames {
				names[i] = n.Name
			}
			return Filter{}, fmt.Errorf("%w: --events %q: want one or more of %s", ErrInvalid, s, strings.Join(names, ", "))
		}
		for _, k := range kinds {
			if !slices.Contains(req.Kinds, k) {
				req.Kinds = append(req.Kinds, k)
			}
		}
	}
	if o.Errors {
		// Ask the daemon only for kinds that can be errors, so that the
		// stream (and its drop count) is not spent on opened/closed events
		// the client would throw away.
		if len(req.Kinds) == 0 {
			req.Kinds = slices.Clone(errorKinds)
		} else {
			req.Kinds = slices.DeleteFunc(req.Kinds, func(k snoopv1.EventKind) bool { return !slices.Contains(errorKinds, k) })
			if len(req.Kinds) == 0 {
				return Filter{}, fmt.Errorf("%w: --errors with --events %s selects nothing: connection open and close events are never errors",
					ErrInvalid, strings.Join(splitList(o.Events), ","))
			}
		}
	}
	slices.Sort(req.Kinds)
	return Filter{Request: req, ErrorsOnly: o.Errors}, nil
}

// ParseOp parses an operation name, case-insensitively.
func ParseOp(s string) (snoopv1.Op, bool) {
	for i, n := range OpNames {
		if strings.EqualFold(s, n) {
			// OpNames is in protocol order, which the API's Op enum
			// follows from 1.
			return snoopv1.Op(i + 1), true
		}
	}
	return snoopv1.Op_OP_UNSPECIFIED, false
}

// ParseSessionPrefix decodes a session id prefix written in hex. An
// optional 0x is allowed; the digits must come in pairs, since the daemon
// matches whole bytes.
func ParseSessionPrefix(s string) ([]byte, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
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
	if len(b) > maxSessionPrefix {
		return nil, fmt.Errorf("%w: --session: %d bytes; a session id has at most %d", ErrInvalid, len(b), maxSessionPrefix)
	}
	return b, nil
}

// eventKinds returns the kinds an --events name selects.
func eventKinds(name string) ([]snoopv1.EventKind, bool) {
	for _, n := range EventNames {
		if strings.EqualFold(name, n.Name) {
			return n.Kinds, true
		}
	}
	return nil, false
}

// splitList flattens flag values that may each hold a comma-separated
// list, dropping empty items and surrounding spaces.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// Match reports whether f keeps ev.
func (f Filter) Match(ev *snoopv1.Event) bool {
	if !MatchRequest(f.Request, ev) {
		return false
	}
	return !f.ErrorsOnly || IsError(ev)
}

// MatchRequest reports whether the daemon would send ev to a watcher that
// asked with req: the filters of different fields must all pass, one
// value of a field is enough, and any of ops, results, session_id_prefix
// or min_latency passes only transactions. A nil req keeps everything.
func MatchRequest(req *snoopv1.WatchEventsRequest, ev *snoopv1.Event) bool {
	if req == nil {
		return true
	}
	if len(req.GetProxies()) > 0 && !slices.Contains(req.GetProxies(), ev.GetProxy()) {
		return false
	}
	if len(req.GetKinds()) > 0 && !slices.Contains(req.GetKinds(), ev.GetKind()) {
		return false
	}
	if c := req.GetConnectionId(); c != 0 && ev.GetConnectionId() != c {
		return false
	}
	minLat := req.GetMinLatency().AsDuration()
	txOnly := len(req.GetOps()) > 0 || len(req.GetResults()) > 0 || len(req.GetSessionIdPrefix()) > 0 || minLat > 0
	if !txOnly {
		return true
	}
	tx := ev.GetTransaction()
	if ev.GetKind() != snoopv1.EventKind_EVENT_KIND_TRANSACTION || tx == nil {
		return false
	}
	if len(req.GetOps()) > 0 && !slices.Contains(req.GetOps(), tx.GetOp()) {
		return false
	}
	if len(req.GetResults()) > 0 && !slices.Contains(req.GetResults(), tx.GetResult()) {
		return false
	}
	if p := req.GetSessionIdPrefix(); len(p) > 0 && !bytes.HasPrefix(tx.GetSessionId(), p) {
		return false
	}
	// An unanswered request has no latency; it counts as zero, as in the
	// daemon.
	return tx.GetLatency().AsDuration() >= minLat
}

// IsError reports whether ev is an error in the sense of --errors: a
// protocol error, a failed connect to the server, a client refused at the
// connection limit, or a transaction whose result is anything but ok,
// hit, miss, notok or exists (so the range errors, corrupt, disconnected,
// malformed, unknown-status, unanswered and orphan).
func IsError(ev *snoopv1.Event) bool {
	switch ev.GetKind() {
	case snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR,
		snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED,
		snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED:
		return true
	case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
		return IsErrorResult(ev.GetTransaction().GetResult())
	}
	return false
}

// IsErrorResult reports whether a transaction result is an error: any
// result but ok, hit, miss, notok and exists, which are a server's normal
// answers.
func IsErrorResult(r string) bool {
	switch r {
	case "ok", "hit", "miss", "notok", "exists":
		// exists is an ADD of a session the server already holds: a
		// normal answer when several servers share one cache.
		return false
	}
	return true
}
