package main

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// A latency fault shows in latency: the events and counters say what the
// client waited, the hold included, and server_latency what the server
// took; a filter on latency finds the held transactions.
func TestLatencyFaultShowsInLatency(t *testing.T) {
	d, addr := setup(t)
	if rep := dcload(t, addr, "-ops", "20", "-conns", "1", "-mix", "add=1", "-sessions", "5", "-data", "10"); rep.Errors != 0 {
		t.Fatalf("seeding: %v", rep.Results)
	}
	const hold = 50 * time.Millisecond
	mustCtl(t, d, "fault", "add", "p", "slow", "--type", "latency", "--delay", hold.String(), "--op", "get")
	const gets = 10
	all := startCtl(t, d, "tail", "p", "-o", "json", "--op", "get", "--count", itoa(gets))
	slow := startCtl(t, d, "tail", "p", "-o", "json", "--filter", `latency > duration("25ms")`, "--count", itoa(gets))
	waitWatchers(t, d, 2)
	if rep := dcload(t, addr, "-ops", itoa(gets), "-conns", "1", "-mix", "get=1", "-sessions", "5"); rep.Errors != 0 {
		t.Fatalf("gets: %v, %d errors", rep.Results, rep.Errors)
	}
	r := all.wait(t, false)
	n := 0
	for _, resp := range parse(t, r.out) {
		tx := resp.GetEvent().GetTransaction()
		if tx == nil {
			continue
		}
		n++
		lat, srv := tx.GetLatency().AsDuration(), tx.GetServerLatency().AsDuration()
		if lat < hold || tx.GetServerLatency() == nil || lat-srv < hold {
			t.Errorf("a held GET: latency %v, server_latency %v; want the %v hold in latency alone", lat, srv, hold)
		}
	}
	if n != gets {
		t.Errorf("tail saw %d GETs, want %d:\n%s", n, gets, r.out)
	}
	if r := slow.wait(t, false); r.code != 0 || len(parse(t, r.out)) != gets {
		t.Errorf("the latency filter found %d events, want %d: %v", len(parse(t, r.out)), gets, r)
	}

	// A request held on its way to the server: the client waits, the
	// server does not.
	mustCtl(t, d, "fault", "clear", "p")
	mustCtl(t, d, "fault", "add", "p", "slowreq", "--type", "latency", "--delay", hold.String(), "--op", "get", "--direction", "request")
	const reqs = 3
	held := startCtl(t, d, "tail", "p", "-o", "json", "--op", "get", "--count", itoa(reqs))
	waitWatchers(t, d, 1)
	if rep := dcload(t, addr, "-ops", itoa(reqs), "-conns", "1", "-mix", "get=1", "-sessions", "5"); rep.Errors != 0 {
		t.Fatalf("gets: %v, %d errors", rep.Results, rep.Errors)
	}
	r = held.wait(t, false)
	if got := len(parse(t, r.out)); got != reqs {
		t.Errorf("tail saw %d GETs, want %d:\n%s", got, reqs, r.out)
	}
	for _, resp := range parse(t, r.out) {
		tx := resp.GetEvent().GetTransaction()
		lat, srv := tx.GetLatency().AsDuration(), tx.GetServerLatency().AsDuration()
		if lat < hold || tx.GetServerLatency() == nil || lat-srv < hold {
			t.Errorf("a held GET request: latency %v, server_latency %v; want the %v hold in latency alone", lat, srv, hold)
		}
	}

	// The counters count what the clients waited.
	var show struct{ Proxy json.RawMessage }
	if err := json.Unmarshal([]byte(mustCtl(t, d, "show", "p", "-o", "json").out), &show); err != nil {
		t.Fatal(err)
	}
	var p snoopv1.Proxy
	if err := protojson.Unmarshal(show.Proxy, &p); err != nil {
		t.Fatal(err)
	}
	for _, oc := range p.GetCounters().GetOps() {
		if oc.GetOp() == snoopv1.Op_OP_GET && oc.GetLatency().GetMean().AsDuration() < hold {
			t.Errorf("GET's mean latency in the counters is %v, below the %v every GET waited", oc.GetLatency().GetMean().AsDuration(), hold)
		}
	}
}
