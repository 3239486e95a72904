package sniff

import (
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/sniff/snifftest"
)

// A lost segment reaches the Observer's sink as a capture-gap event of
// its connection and client, between the events around it, and the
// transactions on both sides of it are the ones that happened.
func TestObserverSinkPublishesGapsBetweenTheTransactions(t *testing.T) {
	var kinds []proxy.EventKind
	var gap *proxy.Event
	var results []string
	events := proxy.SinkFunc(func(e *proxy.Event) {
		kinds = append(kinds, e.Kind)
		switch e.Kind {
		case proxy.KindCaptureGap:
			gap = e.Clone()
		case proxy.KindTransaction:
			results = append(results, e.Tx.Result())
		}
	})
	obs := proxy.NewObserver("cap", events, proxy.ObserverOptions{})
	s := New(ObserverSink{Observer: obs, Events: events}, portServer(9001))

	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	get := func(uid uint32) {
		c.Send(true, distcache.AppendMessage(nil, false, uid, distcache.OpGet, []byte("id")), 1448)
		c.Send(false, distcache.AppendMessage(nil, true, uid, distcache.OpGet, []byte{byte(distcache.StatusNotOK)}), 1448)
	}
	get(1)
	get(2) // its request, packet 5, is lost
	get(3)
	c.CloseBoth()
	for i, p := range c.Packets {
		if i != 5 {
			s.Packet(p.Data, p.CI, c.Link)
		}
	}
	if gap == nil || gap.ConnID != 1 || gap.Client != testClient || gap.Proxy != "cap" ||
		*gap.Gap != (proxy.CaptureGap{Direction: distcache.ClientToServer, First: 16, Last: 31}) {
		t.Fatalf("gap event %+v", gap)
	}
	want := []proxy.EventKind{proxy.KindConnOpened, proxy.KindTransaction, proxy.KindCaptureGap, proxy.KindTransaction,
		proxy.KindTransaction, proxy.KindConnClosed}
	if len(kinds) != len(want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds %v, want %v", kinds, want)
		}
	}
	// 1 misses; 2's answer pairs with nothing; 3 misses.
	if len(results) != 3 || results[0] != "miss" || results[1] != "orphan" || results[2] != "miss" {
		t.Fatalf("results %v", results)
	}
}
