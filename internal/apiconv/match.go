package apiconv

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/vocab"
)

// Op maps a distcache operation to the API's enum, which numbers them
// from 1 in protocol order.
func Op(op distcache.Op) snoopv1.Op {
	if !op.Valid() {
		return snoopv1.Op_OP_UNSPECIFIED
	}
	return snoopv1.Op(op + 1)
}

// OpFromAPI maps the API's enum back; ok is false for OP_UNSPECIFIED and
// unknown numbers.
func OpFromAPI(op snoopv1.Op) (distcache.Op, bool) {
	if op <= snoopv1.Op_OP_UNSPECIFIED || int(op) > int(distcache.NumOps) {
		return 0, false
	}
	return distcache.Op(op - 1), true
}

// Kind maps an event kind to the API's enum; the enum follows the
// vocabulary's order from 1.
func Kind(k vocab.Kind) snoopv1.EventKind {
	if !k.Valid() {
		return snoopv1.EventKind_EVENT_KIND_UNSPECIFIED
	}
	return snoopv1.EventKind(k)
}

// KindFromAPI maps the API's enum back.
func KindFromAPI(k snoopv1.EventKind) (vocab.Kind, bool) {
	v := vocab.Kind(k)
	return v, k > 0 && v.Valid()
}

// SpecFromRequest turns a watch request into the matcher's spec. Every
// value is checked; an error is a *match.FieldError naming the field and
// quoting the value the caller sent.
func SpecFromRequest(req *snoopv1.WatchEventsRequest) (match.Spec, error) {
	s := match.Spec{
		Proxies:       req.GetProxies(),
		SessionPrefix: req.GetSessionIdPrefix(),
		Conn:          req.GetConnectionId(),
		ErrorsOnly:    req.GetErrorsOnly(),
		Expr:          req.GetFilter(),
		Faults:        req.GetFaults(),
	}
	for i, k := range req.GetKinds() {
		vk, ok := KindFromAPI(k)
		if !ok {
			return match.Spec{}, &match.FieldError{Field: fmt.Sprintf("kinds[%d]", i), Reason: kindEnumReason(k)}
		}
		s.Kinds = append(s.Kinds, vk)
	}
	for i, op := range req.GetOps() {
		o, ok := OpFromAPI(op)
		if !ok {
			return match.Spec{}, &match.FieldError{Field: fmt.Sprintf("ops[%d]", i), Reason: opEnumReason(op)}
		}
		s.Ops = append(s.Ops, o)
	}
	for i, name := range req.GetOperations() {
		o, ok := vocab.ParseOp(name)
		if !ok {
			return match.Spec{}, &match.FieldError{Field: fmt.Sprintf("operations[%d]", i),
				Reason: fmt.Sprintf("unknown operation %q (want %s, in any case; OP_GET is accepted too)", name, vocab.List(vocab.OpNames()))}
		}
		if !slices.Contains(s.Ops, o) {
			s.Ops = append(s.Ops, o)
		}
	}
	for i, r := range req.GetResults() {
		vr, ok := vocab.ParseResult(r)
		if !ok {
			return match.Spec{}, &match.FieldError{Field: fmt.Sprintf("results[%d]", i),
				Reason: fmt.Sprintf("unknown result %q (want %s)", r, vocab.List(vocab.ResultNames()))}
		}
		s.Results = append(s.Results, vr)
	}
	if d := req.GetMinLatency(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < 0 {
			return match.Spec{}, &match.FieldError{Field: "min_latency", Reason: "must be a valid, non-negative duration"}
		}
		s.MinLatency = d.AsDuration()
	}
	return s, nil
}

// opEnumReason says why an ops value is not an operation, quoting the
// number the caller sent: a client library that does not know a name
// (ops: ["GET"] instead of "OP_GET") sends 0, so the message says so
// rather than naming OP_UNSPECIFIED, which the caller never wrote.
func opEnumReason(op snoopv1.Op) string {
	const want = "want OP_ADD, OP_GET, OP_REMOVE or OP_HAVE (1 to 4), or name it in operations: \"get\""
	if op == snoopv1.Op_OP_UNSPECIFIED {
		return "0 is not an operation; a client library sends 0 for an enum name it does not know (such as \"GET\"): " + want
	}
	return fmt.Sprintf("%d is not an operation number: %s", int32(op), want)
}

// kindEnumReason says why a kinds value is not an event kind, naming the
// kinds; a 0 is most likely a name the client library did not know.
func kindEnumReason(k snoopv1.EventKind) string {
	var names []string
	for n := int32(1); snoopv1.EventKind_name[n] != ""; n++ {
		names = append(names, snoopv1.EventKind_name[n])
	}
	want := "want " + strings.Join(names, ", ") + " (1 to " + strconv.Itoa(len(names)) + "), or no kinds for all"
	if k == snoopv1.EventKind_EVENT_KIND_UNSPECIFIED {
		return "0 is not an event kind; a client library sends 0 for an enum name it does not know (such as \"TRANSACTION\"): " + want
	}
	return fmt.Sprintf("unknown event kind %d: %s", int32(k), want)
}

// View fills v with the matcher's picture of an API event (snoopctl read,
// consumers of the stream), as the daemon fills it from the proxy's.
func View(ev *snoopv1.Event, daemon string, v *match.View) {
	// The daemon's view has the time the event was emitted (end_time);
	// events from daemons before end_time have only time.
	at := ev.GetEndTime()
	if at == nil {
		at = ev.GetTime()
	}
	*v = match.View{Daemon: daemon, Proxy: ev.GetProxy(), Conn: ev.GetConnectionId(), Time: at.AsTime()}
	v.Kind, _ = KindFromAPI(ev.GetKind())
	tx := ev.GetTransaction()
	if v.Kind != vocab.KindTransaction || tx == nil {
		return
	}
	v.Op, _ = OpFromAPI(tx.GetOp())
	r, ok := vocab.ParseResult(tx.GetResult())
	if !ok {
		r = vocab.ResultUnknownStatus
	}
	v.Result = r
	v.SessionID = tx.GetSessionId()
	v.Latency = tx.GetLatency().AsDuration()
	v.ServerLatency = tx.GetServerLatency().AsDuration()
	v.ReqBytes = int64(tx.GetRequestSize())
	v.RespBytes = int64(tx.GetResponseSize())
	v.Fault = tx.GetFault()
}
