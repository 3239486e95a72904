package pcapfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apievent"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/sniff"
)

// ErrTruncated is wrapped by Reader.Next when the file ends inside a
// packet: the capture was cut short. Every event of the packets before
// it has been returned, and the connections open then closed.
var ErrTruncated = errors.New("capture file truncated")

// The first four bytes of the formats, as they lie in the file: pcap in
// either byte order with microsecond or nanosecond times, and pcapng's
// section header block.
var magics = [][]byte{
	{0xd4, 0xc3, 0xb2, 0xa1}, {0xa1, 0xb2, 0xc3, 0xd4}, // microseconds
	{0x4d, 0x3c, 0xb2, 0xa1}, {0xa1, 0xb2, 0x3c, 0x4d}, // nanoseconds
	pcapngMagic,
}

var pcapngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}

// IsCapture reports whether a file starting with head is a pcap or
// pcapng capture.
func IsCapture(head []byte) bool {
	for _, m := range magics {
		if bytes.HasPrefix(head, m) {
			return true
		}
	}
	return false
}

// Options say how to read a capture.
type Options struct {
	// Server says which end of each connection is the distcache server.
	Server sniff.Server
	// Name is the proxy name the events carry.
	Name string
	// CaptureData keeps session data in transactions (read --data).
	CaptureData bool
}

// Reader turns one capture into events. It is not safe for concurrent
// use.
type Reader struct {
	src    gopacket.PacketDataSource
	link   layers.LinkType
	sniff  *sniff.Sniffer
	data   bool
	queue  []proxy.EventCopy // the events of the packets read last
	next   int               // the first of queue not yet returned
	err    error             // what Next returns once queue is empty
	closed bool
}

// NewReader reads a capture from r, which must be uncompressed.
func NewReader(r io.Reader, opts Options) (*Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	rd := &Reader{data: opts.CaptureData}
	switch {
	case bytes.Equal(head, pcapngMagic):
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("not a readable pcapng file: %w", err)
		}
		rd.src, rd.link = ng, ng.LinkType()
	case IsCapture(head):
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("not a readable pcap file: %w", err)
		}
		rd.src, rd.link = pr, pr.LinkType()
	default:
		return nil, fmt.Errorf("not a pcap or pcapng file (it starts % x)", head)
	}
	if !sniff.CanDecode(rd.link) {
		return nil, fmt.Errorf("link type %s (%d): snoopctl reads Ethernet, Linux cooked (v1, v2), loopback (null, loop) and raw IP captures",
			rd.link, int(rd.link))
	}
	events := proxy.SinkFunc(func(e *proxy.Event) {
		rd.queue = append(rd.queue, proxy.EventCopy{})
		rd.queue[len(rd.queue)-1].Set(e)
	})
	obs := proxy.NewObserver(opts.Name, events, proxy.ObserverOptions{CaptureData: opts.CaptureData})
	rd.sniff = sniff.New(sniff.ObserverSink{Observer: obs, Events: events}, sniff.Options{Server: opts.Server})
	return rd, nil
}

// Next returns the next event, in the order the capture gave them. At
// the end it returns io.EOF; for a file cut inside a packet an error
// wrapping ErrTruncated; for a file that breaks the format an error
// naming the packet. Either way the connections still open were closed
// first ("end of capture") and their events returned.
func (r *Reader) Next() (*snoopv1.WatchEventsResponse, error) {
	for r.next == len(r.queue) {
		if r.closed {
			return nil, r.err
		}
		clear(r.queue) // let go of captured data
		r.queue, r.next = r.queue[:0], 0
		err := r.sniff.ReadPacket(r.src, r.link)
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			r.err = io.EOF
		case errors.Is(err, io.ErrUnexpectedEOF):
			r.err = fmt.Errorf("%w after %d packets", ErrTruncated, r.sniff.Stats().Packets)
		default:
			r.err = err
		}
		r.sniff.Finish("end of capture")
		r.closed = true
	}
	e := r.queue[r.next].Get()
	r.next++
	return &snoopv1.WatchEventsResponse{Event: apievent.New(e, r.data)}, nil
}

// Stats returns what the reassembly counted so far: packets,
// connections, capture gaps and the bytes they missed.
func (r *Reader) Stats() sniff.Stats { return r.sniff.Stats() }
