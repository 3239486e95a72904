package daemon

import (
	"bytes"
	"fmt"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// results are the result names a filter may ask for.
var results = map[string]bool{
	"ok": true, "notok": true, "hit": true, "miss": true, "exists": true, "timeout-range": true,
	"id-range": true, "data-range": true, "corrupt": true, "disconnected": true, "malformed": true,
	"unanswered": true, "orphan": true, "unknown-status": true,
}

// compileFilter turns a watch request into a hub filter. Fields combine
// with AND, the values of one field with OR; transaction filters pass
// only transactions. Unknown values are a FieldError.
func compileFilter(req *snoopv1.WatchEventsRequest) (hub.Filter, error) {
	proxies := map[string]bool{}
	for _, p := range req.GetProxies() {
		proxies[p] = true
	}
	kinds := map[proxy.EventKind]bool{}
	for i, k := range req.GetKinds() {
		found := false
		for pk, ak := range eventKinds {
			if ak == k {
				kinds[pk], found = true, true
			}
		}
		if !found {
			return nil, &FieldError{Field: fmt.Sprintf("kinds[%d]", i), Reason: fmt.Sprintf("unknown event kind %v", k)}
		}
	}
	var ops [distcache.NumOps]bool
	anyOp := len(req.GetOps()) == 0
	for i, op := range req.GetOps() {
		if op <= snoopv1.Op_OP_UNSPECIFIED || op > snoopv1.Op_OP_HAVE {
			return nil, &FieldError{Field: fmt.Sprintf("ops[%d]", i), Reason: fmt.Sprintf("unknown operation %v", op)}
		}
		ops[op-1] = true
	}
	res := map[string]bool{}
	for i, r := range req.GetResults() {
		if !results[r] {
			return nil, &FieldError{Field: fmt.Sprintf("results[%d]", i), Reason: fmt.Sprintf("unknown result %q (want ok, notok, hit, miss, exists, timeout-range, id-range, data-range, corrupt, disconnected, malformed, unknown-status, unanswered, orphan)", r)}
		}
		res[r] = true
	}
	prefix := req.GetSessionIdPrefix()
	if len(prefix) > distcache.MaxSessionIDLen {
		return nil, &FieldError{Field: "session_id_prefix", Reason: fmt.Sprintf("%d bytes; a session id has at most %d", len(prefix), distcache.MaxSessionIDLen)}
	}
	if d := req.GetMinLatency(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return nil, &FieldError{Field: "min_latency", Reason: "must be a non-negative duration"}
	}
	minLat := minDuration(req.GetMinLatency())
	conn := req.GetConnectionId()
	txOnly := !anyOp || len(res) > 0 || len(prefix) > 0 || minLat > 0

	return func(e *proxy.Event) bool {
		if len(proxies) > 0 && !proxies[e.Proxy] {
			return false
		}
		if len(kinds) > 0 && !kinds[e.Kind] {
			return false
		}
		if conn != 0 && e.ConnID != conn {
			return false
		}
		if !txOnly {
			return true
		}
		t := e.Tx
		if e.Kind != proxy.KindTransaction || t == nil {
			return false
		}
		if !anyOp && (!t.Op.Valid() || !ops[t.Op]) {
			return false
		}
		if len(res) > 0 && !res[t.Result()] {
			return false
		}
		if len(prefix) > 0 && !bytes.HasPrefix(t.SessionID, prefix) {
			return false
		}
		return t.Latency >= minLat
	}, nil
}

// hubOptions turns a watch request into the hub's watcher options.
func hubOptions(req *snoopv1.WatchEventsRequest, f hub.Filter) hub.WatchOptions {
	return hub.WatchOptions{Filter: f, History: int(req.GetHistory())}
}
