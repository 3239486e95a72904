// Package vocab is the one place that names what snoopd reports: the
// distcache operations, the kinds of event and the results of
// transactions, which of them count as errors, and the words help text
// uses for them. The proxy's counters, the daemon's filters and API, the
// matcher, snoopctl's flags, formats and help all take their names from
// here, as net/http's users take a status's name from StatusText.
package vocab

import (
	"strings"

	"github.com/snoopd/snoopd/distcache"
)

// Class sorts results and kinds for people: what went well, what is a
// normal answer that did not find anything, and what is an error.
type Class uint8

// Classes.
const (
	// Good: the operation did what was asked (ok, hit).
	Good Class = iota
	// Normal: a server's normal answer that is not a success (miss,
	// notok, exists): not an error for --errors.
	Normal
	// Error: a rule broken, a range refused, nothing answered.
	Error
)

// Result is a transaction's outcome.
type Result uint8

// Results, in the order the API and help list them.
const (
	ResultOK Result = iota
	ResultNotOK
	ResultHit
	ResultMiss
	ResultExists
	ResultTimeoutRange
	ResultIDRange
	ResultDataRange
	ResultCorrupt
	ResultDisconnected
	ResultMalformed
	ResultUnknownStatus
	ResultUnanswered
	ResultOrphan
	// NumResults is the number of results.
	NumResults
)

// results names each result. A result that is a status the server sent
// takes the protocol's name for it (distcache.Status.String), so the two
// cannot drift apart; the others are the proxy's own words.
var results = [NumResults]struct {
	name  string
	class Class
	help  string
}{
	ResultOK:            {distcache.StatusOK.String(), Good, "the server did it (ADD stored, REMOVE removed, HAVE has it)"},
	ResultNotOK:         {distcache.StatusNotOK.String(), Normal, "the server did not (REMOVE or HAVE: no such session)"},
	ResultHit:           {"hit", Good, "GET found the session"},
	ResultMiss:          {"miss", Normal, "GET did not find the session"},
	ResultExists:        {distcache.StatusAddExists.String(), Normal, "ADD of a session the server already holds"},
	ResultTimeoutRange:  {distcache.StatusAddTimeoutRange.String(), Error, "ADD refused: timeout above 7 days"},
	ResultIDRange:       {distcache.StatusAddIDRange.String(), Error, "ADD refused: session id not 1 to 64 bytes"},
	ResultDataRange:     {distcache.StatusAddDataRange.String(), Error, "ADD refused: session data not 1 to 32768 bytes"},
	ResultCorrupt:       {distcache.StatusAddCorrupt.String(), Error, "ADD refused: its id length does not fit the payload"},
	ResultDisconnected:  {distcache.StatusDisconnected.String(), Error, "the server lost its own upstream"},
	ResultMalformed:     {"malformed", Error, "a response that does not fit its operation"},
	ResultUnknownStatus: {"unknown-status", Error, "a status byte the protocol does not define"},
	ResultUnanswered:    {"unanswered", Error, "the connection ended (or the response timeout passed) before the answer"},
	ResultOrphan:        {"orphan", Error, "a response to no request the proxy saw"},
}

// String returns the result's name, as filters, counters and output use
// it ("ok", "miss", "timeout-range", ...).
func (r Result) String() string {
	if r < NumResults {
		return results[r].name
	}
	return "unknown-result"
}

// Class says how the result reads to people.
func (r Result) Class() Class {
	if r < NumResults {
		return results[r].class
	}
	return Error
}

// IsError reports whether the result is an error in the sense of
// --errors: anything but ok, hit, miss, notok and exists. exists is an ADD
// of a session the server already holds, a normal answer when several
// servers share one cache.
func (r Result) IsError() bool { return r.Class() == Error }

// Help is one line saying what the result means.
func (r Result) Help() string {
	if r < NumResults {
		return results[r].help
	}
	return ""
}

// Results lists every result in order.
func Results() []Result {
	out := make([]Result, NumResults)
	for i := range out {
		out[i] = Result(i)
	}
	return out
}

// ResultNames lists the results' names in order.
func ResultNames() []string {
	return names(int(NumResults), func(i int) string { return Result(i).String() })
}

// ParseResult parses a result name, case-insensitively.
func ParseResult(s string) (Result, bool) {
	for i := range results {
		if strings.EqualFold(s, results[i].name) {
			return Result(i), true
		}
	}
	return 0, false
}

// ResultOf classifies a transaction the proxy saw; unanswered and orphan
// are the proxy's own outcomes, which the protocol has no byte for.
func ResultOf(t *distcache.Transaction, unanswered, orphan bool) Result {
	switch {
	case unanswered:
		return ResultUnanswered
	case orphan:
		return ResultOrphan
	case t.ResponseMalformed:
		return ResultMalformed
	case t.Hit:
		return ResultHit
	case t.Op == distcache.OpGet && t.Status == distcache.StatusNotOK:
		return ResultMiss
	}
	switch t.Status {
	case distcache.StatusOK:
		return ResultOK
	case distcache.StatusNotOK:
		return ResultNotOK
	case distcache.StatusDisconnected:
		return ResultDisconnected
	case distcache.StatusAddCorrupt:
		return ResultCorrupt
	case distcache.StatusAddExists:
		return ResultExists
	case distcache.StatusAddTimeoutRange:
		return ResultTimeoutRange
	case distcache.StatusAddIDRange:
		return ResultIDRange
	case distcache.StatusAddDataRange:
		return ResultDataRange
	}
	return ResultUnknownStatus
}

// OpName returns an operation's name as filters and output write it:
// "add", "get", "remove", "have"; "-" for an invalid one.
func OpName(op distcache.Op) string {
	if !op.Valid() {
		return "-"
	}
	return opNames[op]
}

var opNames = [distcache.NumOps]string{"add", "get", "remove", "have"}

// OpNames lists the operations' names in protocol order.
func OpNames() []string { return opNames[:] }

// ParseOp parses an operation's name in any of the spellings people and
// programs use: "get", "GET", or the API's enum name "OP_GET".
func ParseOp(s string) (distcache.Op, bool) {
	t := s
	if len(t) > 3 && strings.EqualFold(t[:3], "OP_") {
		t = t[3:]
	}
	for i, n := range opNames {
		if strings.EqualFold(t, n) {
			return distcache.Op(i), true
		}
	}
	return 0, false
}

// Kind is what an event reports.
type Kind uint8

// Kinds. The zero Kind is not a kind.
const (
	// KindTransaction is a request paired with its response, a request the
	// connection ended before answering (unanswered), or a response that
	// matched no request (orphan).
	KindTransaction Kind = iota + 1
	// KindConnOpened: a client connected and the server was dialled.
	KindConnOpened
	// KindConnClosed: a proxied connection ended.
	KindConnClosed
	// KindConnectFailed: the server could not be dialled; the client was
	// closed.
	KindConnectFailed
	// KindConnRefused: the client was closed at once (connection limit,
	// out of descriptors).
	KindConnRefused
	// KindProtocolError: a direction broke a protocol rule.
	KindProtocolError
	// KindCaptureGap: bytes of a direction that a packet capture missed
	// (snoopctl read of a pcap file, a tap); the direction resyncs at the
	// next valid header, so no transaction is made of a guess.
	KindCaptureGap
	// NumKinds is one more than the last kind.
	NumKinds
)

var kinds = [NumKinds]struct {
	name, short string
	isError     bool
}{
	KindTransaction:   {"transaction", "tx", false},
	KindConnOpened:    {"conn-opened", "opened", false},
	KindConnClosed:    {"conn-closed", "closed", false},
	KindConnectFailed: {"connect-failed", "connect-failed", true},
	KindConnRefused:   {"conn-refused", "refused", true},
	KindProtocolError: {"protocol-error", "protocol", true},
	KindCaptureGap:    {"capture-gap", "gap", false},
}

// String returns the kind's stable name: "transaction", "conn-opened",
// "conn-closed", "connect-failed", "conn-refused", "protocol-error",
// "capture-gap".
func (k Kind) String() string {
	if k > 0 && k < NumKinds {
		return kinds[k].name
	}
	return "unknown"
}

// Short returns the name --events takes for the kind: "tx", "opened",
// "closed", "connect-failed", "refused", "protocol", "gap".
func (k Kind) Short() string {
	if k > 0 && k < NumKinds {
		return kinds[k].short
	}
	return "unknown"
}

// Valid reports whether k is a kind.
func (k Kind) Valid() bool { return k > 0 && k < NumKinds }

// IsError reports whether every event of the kind is an error (a failed
// connect, a refused client, a protocol error). A transaction is an error
// by its result; opened and closed never are.
func (k Kind) IsError() bool { return k.Valid() && kinds[k].isError }

// Kinds lists every kind in order.
func Kinds() []Kind {
	out := make([]Kind, 0, NumKinds-1)
	for k := KindTransaction; k < NumKinds; k++ {
		out = append(out, k)
	}
	return out
}

// KindGroups are the names --events takes, each with the kinds it
// selects: "tx", "conn" (opened and closed), every other kind's short
// name, then "all".
func KindGroups() []KindGroup {
	out := []KindGroup{
		{KindTransaction.Short(), []Kind{KindTransaction}},
		{"conn", []Kind{KindConnOpened, KindConnClosed}},
	}
	for _, k := range Kinds()[1:] {
		out = append(out, KindGroup{k.Short(), []Kind{k}})
	}
	return append(out, KindGroup{"all", Kinds()})
}

// KindGroup is one --events name and the kinds it selects.
type KindGroup struct {
	Name  string
	Kinds []Kind
}

// ParseKinds returns the kinds an --events name (or a kind's full name)
// selects, case-insensitively.
func ParseKinds(s string) ([]Kind, bool) {
	for _, g := range KindGroups() {
		if strings.EqualFold(s, g.Name) {
			return g.Kinds, true
		}
	}
	for _, k := range Kinds() {
		if strings.EqualFold(s, k.String()) {
			return []Kind{k}, true
		}
	}
	return nil, false
}

// KindGroupNames lists the names --events takes.
func KindGroupNames() []string {
	g := KindGroups()
	return names(len(g), func(i int) string { return g[i].Name })
}

func names(n int, name func(int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = name(i)
	}
	return out
}

// List joins names for a message: "a, b or c".
func List(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
