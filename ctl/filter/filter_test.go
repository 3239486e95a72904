package filter

import (
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func tx(proxy string, conn uint64, op snoopv1.Op, result string, id string, lat time.Duration) *snoopv1.Event {
	t := &snoopv1.Transaction{Op: op, Result: result, SessionId: []byte(id), SessionIdLength: uint32(len(id))}
	if lat >= 0 {
		t.Latency = durationpb.New(lat)
	}
	return &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: proxy, ConnectionId: conn, Transaction: t}
}

func other(kind snoopv1.EventKind, proxy string, conn uint64) *snoopv1.Event {
	return &snoopv1.Event{Kind: kind, Proxy: proxy, ConnectionId: conn}
}

var (
	getHit    = tx("a", 1, snoopv1.Op_OP_GET, "hit", "\x0a\x1b\x2c", 3*time.Millisecond)
	getMiss   = tx("a", 2, snoopv1.Op_OP_GET, "miss", "\x0a\xff", time.Millisecond)
	addExists = tx("b", 1, snoopv1.Op_OP_ADD, "exists", "\x0a\x1b", 500*time.Microsecond)
	unanswer  = tx("b", 3, snoopv1.Op_OP_HAVE, "unanswered", "\x01", -1)
	opened    = other(snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, "a", 1)
	closed    = other(snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, "b", 3)
	failed    = other(snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED, "a", 0)
	refused   = other(snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED, "b", 0)
	protoErr  = other(snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR, "a", 2)
	all       = []*snoopv1.Event{getHit, getMiss, addExists, unanswer, opened, closed, failed, refused, protoErr}
)

func TestNewAndMatch(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want []*snoopv1.Event
	}{
		{"no filter keeps all", Options{}, all},
		{"proxy", Options{Proxies: []string{"a"}}, []*snoopv1.Event{getHit, getMiss, opened, failed, protoErr}},
		{"two proxies OR", Options{Proxies: []string{"a,b"}}, all},
		{"op passes only transactions", Options{Ops: []string{"get"}}, []*snoopv1.Event{getHit, getMiss}},
		{"ops OR, case-insensitive", Options{Ops: []string{"GET", "add"}}, []*snoopv1.Event{getHit, getMiss, addExists}},
		{"status", Options{Status: []string{"miss,unanswered"}}, []*snoopv1.Event{getMiss, unanswer}},
		{"op AND status", Options{Ops: []string{"get"}, Status: []string{"hit", "exists"}}, []*snoopv1.Event{getHit}},
		{"session prefix", Options{Session: "0a1b"}, []*snoopv1.Event{getHit, addExists}},
		{"session prefix 0x", Options{Session: "0x0A"}, []*snoopv1.Event{getHit, getMiss, addExists}},
		{"min latency", Options{MinLatency: time.Millisecond}, []*snoopv1.Event{getHit, getMiss}},
		{"conn keeps every kind", Options{Conn: 1}, []*snoopv1.Event{getHit, addExists, opened}},
		{"conn AND proxy", Options{Conn: 1, Proxies: []string{"b"}}, []*snoopv1.Event{addExists}},
		{"events conn", Options{Events: []string{"conn"}}, []*snoopv1.Event{opened, closed}},
		{"events tx,protocol", Options{Events: []string{"tx,protocol"}}, []*snoopv1.Event{getHit, getMiss, addExists, unanswer, protoErr}},
		{"events refused + connect-failed", Options{Events: []string{"refused", "connect-failed"}}, []*snoopv1.Event{failed, refused}},
		{"errors", Options{Errors: true}, []*snoopv1.Event{unanswer, failed, refused, protoErr}},
		{"errors AND proxy", Options{Errors: true, Proxies: []string{"a"}}, []*snoopv1.Event{failed, protoErr}},
		{"errors AND events tx", Options{Errors: true, Events: []string{"tx"}}, []*snoopv1.Event{unanswer}},
		{"errors AND op", Options{Errors: true, Ops: []string{"have"}}, []*snoopv1.Event{unanswer}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New(tc.opts)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			var got []*snoopv1.Event
			for _, ev := range all {
				if f.Match(ev) {
					got = append(got, ev)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("kept %d events %v, want %d %v", len(got), kinds(got), len(tc.want), kinds(tc.want))
			}
		})
	}
}

func kinds(evs []*snoopv1.Event) []string {
	var s []string
	for _, e := range evs {
		k := e.GetKind().String()
		if t := e.GetTransaction(); t != nil {
			k = t.GetOp().String() + "/" + t.GetResult()
		}
		s = append(s, e.GetProxy()+":"+k)
	}
	return s
}

// TestNewRequest checks that flags map to the request fields the daemon
// evaluates, so a live stream and a saved file are filtered alike.
func TestNewRequest(t *testing.T) {
	f, err := New(Options{
		Proxies:    []string{"a", "b,a"},
		Ops:        []string{"get,add"},
		Status:     []string{"HIT"},
		Session:    "0a1b",
		MinLatency: 2 * time.Millisecond,
		Conn:       7,
		Events:     []string{"tx"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &snoopv1.WatchEventsRequest{
		Proxies:         []string{"a", "b"},
		Kinds:           []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION},
		Ops:             []snoopv1.Op{snoopv1.Op_OP_GET, snoopv1.Op_OP_ADD},
		Results:         []string{"hit"},
		SessionIdPrefix: []byte{0x0a, 0x1b},
		MinLatency:      durationpb.New(2 * time.Millisecond),
		ConnectionId:    7,
	}
	if !proto.Equal(f.Request, want) {
		t.Errorf("request %v, want %v", f.Request, want)
	}

	// --errors is evaluated by the daemon; with --events it drops the
	// kinds that are never errors.
	f, err = New(Options{Errors: true, Events: []string{"conn,protocol"}, Expr: `proxy != "x"`})
	if err != nil {
		t.Fatal(err)
	}
	wantKinds := []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR}
	if !slices.Equal(f.Request.Kinds, wantKinds) || !f.Request.ErrorsOnly || f.Request.Filter != `proxy != "x"` {
		t.Errorf("--errors: %v, want kinds %v, errors_only and the filter", f.Request, wantKinds)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"unknown op", Options{Ops: []string{"get,put"}}},
		{"unknown status", Options{Status: []string{"fine"}}},
		{"unknown event", Options{Events: []string{"tx,bogus"}}},
		{"session not hex", Options{Session: "z z"}},
		{"session odd digits", Options{Session: "0x0a1"}},
		{"session only 0x", Options{Session: "0x"}},
		{"session too long", Options{Session: string(make([]byte, 130))}},
		{"negative latency", Options{MinLatency: -time.Second}},
		{"errors with conn events only", Options{Errors: true, Events: []string{"conn"}}},
		{"bad expression", Options{Expr: `op ==`}},
		{"expression not a bool", Options{Expr: `latency`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); !errors.Is(err, ErrInvalid) {
				t.Errorf("New(%+v) = %v, want an ErrInvalid", tc.opts, err)
			}
		})
	}
}

func TestZeroFilterAndMinLatencyZero(t *testing.T) {
	if !(Filter{}).Match(opened) {
		t.Error("a zero Filter must keep everything")
	}
	// A zero min_latency is no filter at all, as in the daemon: it must
	// not turn the request into a transaction-only filter.
	m, err := Compile(&snoopv1.WatchEventsRequest{MinLatency: durationpb.New(0)})
	if err != nil {
		t.Fatal(err)
	}
	if f := (Filter{m: m}); !f.Match(opened) {
		t.Error("min_latency 0 dropped a connection event")
	}
}

// TestSessionForms reads every form of --session, and shows that what
// TextForm lets tail show as text reads back as the same bytes.
func TestSessionForms(t *testing.T) {
	for in, want := range map[string]string{
		"0a1b":              "\x0a\x1b",
		"0x0a1b":            "\x0a\x1b",
		"hex:0a1b":          "\x0a\x1b",
		"dcload-8":          "dcload-8",
		"text:dc":           "dc",
		"abc":               "abc",
		"base64:ZGNsb2Fk":   "dcload",
		"e2e-":              "e2e-",
		"text:0a1b":         "0a1b",
		"dcload-8a3f-00042": "dcload-8a3f-00042",
	} {
		got, err := ParseSessionPrefix(in)
		if err != nil || string(got) != want {
			t.Errorf("ParseSessionPrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, id := range []string{"dcload-8a3f-0042", "e2e-1", "abc", "x"} {
		if !TextForm([]byte(id)) {
			t.Errorf("%q is not shown as text", id)
		}
		if got, _ := ParseSessionPrefix(id); string(got) != id {
			t.Errorf("%q shown as text reads back as %q", id, got)
		}
	}
	for _, id := range []string{"cafe", "0x12", "a b", "\x00\x01", "text:x", "", "ZGNsb2FkLTEyOA=="} {
		if TextForm([]byte(id)) {
			t.Errorf("%q is shown as text", id)
		}
	}
}

// TestSessionJSONForm reads back a session id as -o json prints it
// (protojson's standard base64), as it is and with base64:; a value that
// could also be text comes with a note saying how it was read.
func TestSessionJSONForm(t *testing.T) {
	ids := []string{"dcload-128", "dcload-8a3f-00042", "x", "\x00\xff\x10\x20",
		strings.Repeat("\xab", 32), "dcload", "abcdefghi", "dcload147"}
	for _, id := range ids {
		printed := base64.StdEncoding.EncodeToString([]byte(id))
		for _, in := range []string{printed, "base64:" + printed} {
			if got, err := ParseSessionPrefix(in); err != nil || string(got) != id {
				t.Errorf("%s (as -o json prints %q) = %q, %v", in, id, got, err)
			}
		}
		if note := AmbiguousSession(printed); !strings.HasSuffix(printed, "=") && !strings.Contains(note, "read as base64") {
			t.Errorf("%s: note %q, want one saying it is read as base64", printed, note)
		}
		if TextForm([]byte(printed)) {
			t.Errorf("an id %q is shown as text, which would read back as base64", printed)
		}
	}
	for s, want := range map[string]string{
		"sess":             "read as text; for base64 as -o json prints session ids, write base64:sess",
		"sessions":         "read as base64, as -o json prints session ids; for text write text:sessions",
		"dcload-":          "",
		"0a1b":             "",
		"base64:ZGNsb2Fk":  "",
		"text:abcd":        "",
		"ZGNsb2FkLTEyOA==": "",
	} {
		if note := AmbiguousSession(s); !strings.Contains(note, want) || (want == "") != (note == "") {
			t.Errorf("%q: note %q, want %q", s, note, want)
		}
		if got, _ := ParseSessionPrefix("text:" + s); string(got) != s {
			t.Errorf("text:%s reads as %q", s, got)
		}
	}
}
