package sniff

import (
	"time"

	"github.com/snoopd/snoopd/proxy"
)

// ObserverSink feeds the connections a Sniffer finds to a proxy.Observer,
// whose assembler makes transactions of them, and publishes each capture
// gap on Events (the Observer's own sink) as a KindCaptureGap event just
// before the direction resyncs.
type ObserverSink struct {
	Observer *proxy.Observer
	Events   proxy.Sink
}

var _ Sink = ObserverSink{}

// observedConn is an Observer's connection with the client address its
// gap events carry.
type observedConn struct {
	*proxy.ObservedConn
	client string
}

// Open opens the connection on the Observer.
func (s ObserverSink) Open(client string, now time.Time, midStream bool) Conn {
	return observedConn{s.Observer.Open(client, now, midStream), client}
}

// Gap publishes a KindCaptureGap event for c.
func (s ObserverSink) Gap(c Conn, g Gap, now time.Time) {
	var client string
	if oc, ok := c.(observedConn); ok {
		client = oc.client
	}
	s.Events.Publish(&proxy.Event{
		Kind: proxy.KindCaptureGap, Time: now, Proxy: s.Observer.Name(), ConnID: c.ID(), Client: client,
		Gap: &proxy.CaptureGap{Direction: g.Dir, First: g.First, Last: g.Last},
	})
}
