package tshark

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/vocab"
)

// Transaction is a request and its outcome as any source tells it:
// snoopd's events, the dissector's links, another reader of captures.
type Transaction struct {
	Client    string        // the client's address, host:port
	Op        string        // add, get, remove, have
	UID       uint32        // request_uid
	Result    string        // as snoopd names results: hit, miss, ok, ..., unanswered, orphan
	SessionID string        // hex; empty when the source has none (an orphan)
	Latency   time.Duration // 0 when the source did not time it
}

func (t Transaction) String() string {
	return fmt.Sprintf("%s %s uid=%d %s id=%s latency=%v", t.Client, t.Op, t.UID, t.Result, t.SessionID, t.Latency)
}

// opName is a wire operation's name as snoopd writes it.
func opName(op int) string { return vocab.OpName(distcache.Op(op)) }

// Transactions pairs the PDUs by the dissector's links: a response with
// its request (the client is the request's sender), a request no
// response answered as unanswered, a response to no request as orphan.
// PDUs that broke a rule, and the undecoded bytes after them, are left
// out.
func Transactions(pdus []PDU) []Transaction {
	type key struct {
		frame, stream int
		uid           uint32
	}
	reqs := make(map[key]PDU)
	for _, p := range pdus {
		if !p.IsResponse && p.Rule == "" {
			reqs[key{p.Frame, p.Stream, p.UID}] = p
		}
	}
	var out []Transaction
	for _, p := range pdus {
		switch {
		case p.Rule != "" || p.Frames == 0:
			// A broken frame, or bytes after one: no message.
		case !p.IsResponse && p.ResponseIn == 0:
			out = append(out, Transaction{Client: p.Src, Op: opName(p.Op), UID: p.UID, Result: vocab.ResultUnanswered.String(),
				SessionID: hex.EncodeToString(p.SessionID)})
		case p.IsResponse && p.ResponseTo == 0:
			out = append(out, Transaction{Client: p.Dst, Op: opName(p.Op), UID: p.UID, Result: vocab.ResultOrphan.String()})
		case p.IsResponse:
			req := reqs[key{p.ResponseTo, p.Stream, p.UID}]
			out = append(out, Transaction{Client: p.Dst, Op: opName(p.Op), UID: p.UID, Result: p.Result,
				SessionID: hex.EncodeToString(req.SessionID), Latency: p.Latency})
		}
	}
	return out
}

// FromEvents returns the transactions among snoopd's events. client
// gives the address a connection's client has in the capture (the
// event's own for TCP clients); nil takes the event's.
func FromEvents(evs []*snoopv1.Event, client func(*snoopv1.Event) string) []Transaction {
	var out []Transaction
	for _, ev := range evs {
		tx := ev.GetTransaction()
		if ev.GetKind() != snoopv1.EventKind_EVENT_KIND_TRANSACTION || tx == nil {
			continue
		}
		c := ev.GetClient()
		if client != nil {
			c = client(ev)
		}
		t := Transaction{Client: c, Op: opName(int(tx.GetOp()) - 1), UID: tx.GetRequestUid(), Result: tx.GetResult(),
			SessionID: hex.EncodeToString(tx.GetSessionId())}
		if tx.GetLatency() != nil {
			t.Latency = tx.GetLatency().AsDuration()
		}
		out = append(out, t)
	}
	return out
}

// Compare holds got to want as multisets: the same transactions (client,
// operation, uid, result, session id), and where both timed one,
// latencies within tolerance. It returns the differences, at most 20,
// each in words; none when they agree.
func Compare(want, got []Transaction, tolerance time.Duration) []string {
	order := func(a, b Transaction) int {
		return cmp.Or(cmp.Compare(a.Client, b.Client), cmp.Compare(a.UID, b.UID), cmp.Compare(a.Op, b.Op),
			cmp.Compare(a.Result, b.Result), cmp.Compare(a.SessionID, b.SessionID), cmp.Compare(a.Latency, b.Latency))
	}
	same := func(a, b Transaction) int {
		return cmp.Or(cmp.Compare(a.Client, b.Client), cmp.Compare(a.UID, b.UID), cmp.Compare(a.Op, b.Op),
			cmp.Compare(a.Result, b.Result), cmp.Compare(a.SessionID, b.SessionID))
	}
	w, g := slices.Clone(want), slices.Clone(got)
	slices.SortFunc(w, order)
	slices.SortFunc(g, order)
	var diffs []string
	add := func(format string, args ...any) {
		if len(diffs) < 20 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case j == len(g) || (i < len(w) && same(w[i], g[j]) < 0):
			add("missing: %v", w[i])
			i++
		case i == len(w) || same(w[i], g[j]) > 0:
			add("not expected: %v", g[j])
			j++
		default:
			if w[i].Latency != 0 && g[j].Latency != 0 && (w[i].Latency-g[j].Latency > tolerance || g[j].Latency-w[i].Latency > tolerance) {
				add("latency of %v: got %v", w[i], g[j].Latency)
			}
			i++
			j++
		}
	}
	if len(want) != len(got) {
		add("%d transactions, want %d", len(got), len(want))
	}
	return diffs
}
