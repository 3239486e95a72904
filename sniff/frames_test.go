package sniff

import (
	"strings"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/sniff/snifftest"
)

// feed runs the conversation's packets through s.
func feed(s *Sniffer, c *snifftest.Conversation) {
	for _, p := range c.Packets {
		s.Packet(p.Data, p.CI, c.Link)
	}
}

// recorder is a Sink that writes down everything it is told.
type recorder struct {
	conns []*recConn
	gaps  []Gap
	log   []string
}

var _ Sink = (*recorder)(nil)

func (r *recorder) Open(client string, now time.Time, midStream bool) Conn {
	c := &recConn{r: r, id: uint64(len(r.conns) + 1), client: client, midStream: midStream}
	r.conns = append(r.conns, c)
	r.log = append(r.log, "open "+client)
	return c
}

func (r *recorder) Gap(c Conn, g Gap, now time.Time) {
	r.gaps = append(r.gaps, g)
	r.log = append(r.log, "gap")
}

type recConn struct {
	r         *recorder
	id        uint64
	client    string
	midStream bool
	streams   [2]strings.Builder
	resyncs   [2]int
	closed    string
}

func (c *recConn) ID() uint64 { return c.id }

func (c *recConn) Data(dir distcache.Direction, p []byte, now time.Time) {
	if c.closed != "" {
		panic("data after close")
	}
	// One line for each run of one direction's bytes.
	if c.r.log[len(c.r.log)-1] != "data "+dir.String() {
		c.r.log = append(c.r.log, "data "+dir.String())
	}
	c.streams[dirIndex(dir)].Write(p)
}

func (c *recConn) Resync(dir distcache.Direction, now time.Time) {
	c.resyncs[dirIndex(dir)]++
	c.streams[dirIndex(dir)].WriteString("|")
}

func (c *recConn) Close(reason string, now time.Time) {
	if c.closed != "" {
		panic("closed twice")
	}
	c.closed = reason
	c.r.log = append(c.r.log, "close "+reason)
}
