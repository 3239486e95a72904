package sniff

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/snoopd/snoopd/sniff/snifftest"
)

// checkOut checks what a stream hands on against the sender's bytes: in
// order, each byte the one the sender sent at that offset, every offset
// handed on or skipped exactly once.
type checkOut struct {
	t      *testing.T
	sender func(off int64) byte
	at     int64
}

func (o *checkOut) deliver(p []byte) {
	for i, b := range p {
		if want := o.sender(o.at + int64(i)); b != want {
			o.t.Fatalf("byte at offset %d is %#x, the sender sent %#x", o.at+int64(i), b, want)
		}
	}
	o.at += int64(len(p))
}

func (o *checkOut) skip(first, last int64) {
	if first != o.at || last < first {
		o.t.Fatalf("skip [%d, %d] at offset %d", first, last, o.at)
	}
	o.at = last + 1
}

// FuzzStream feeds a stream random segments of one sender's bytes (any
// offsets, lengths, repeats, overlaps and cut-off tails) and the peer's
// acknowledgements. The stream never panics, never holds more than its
// bound, and hands on a subsequence of the sender's bytes in order, with
// every hole reported.
func FuzzStream(f *testing.F) {
	f.Add([]byte{0, 0, 10, 0, 0, 20, 10, 0, 0, 5, 30, 3}, uint16(300))
	f.Add([]byte{0, 100, 50, 0, 0, 0, 100, 0, 0, 50, 50, 0, 255, 255, 255, 9}, uint16(64))
	f.Fuzz(func(t *testing.T, ops []byte, bound uint16) {
		sender := func(off int64) byte { return byte(off*7 + off>>8) }
		const isn = 0xfffff000 // wraps within the first 4 KiB
		var s stream
		s.start(isn)
		out := &checkOut{t: t, sender: sender}
		var c counts
		buf := make([]byte, 0, 256)
		for len(ops) >= 4 {
			start := int64(binary.BigEndian.Uint16(ops))
			n := int(ops[2])
			lost := int(ops[3] & 0x0f)
			ack := ops[3]&0x80 != 0
			ops = ops[4:]
			buf = buf[:0]
			for i := range n {
				buf = append(buf, sender(start+int64(i)))
			}
			if ack {
				// The peer acknowledges up to start.
				s.acked(isn+uint32(start), out)
			} else {
				s.add(isn+uint32(start), buf, lost, int(bound), out, &c)
			}
			if s.heldBytes > int(bound) {
				t.Fatalf("%d bytes held, bound %d", s.heldBytes, bound)
			}
			if out.at != s.offset {
				t.Fatalf("handed on up to %d, stream at %d", out.at, s.offset)
			}
			for i := 1; i < len(s.held); i++ {
				if s.held[i].start < s.held[i-1].end() {
					t.Fatalf("held segments overlap: %+v", s.held)
				}
			}
		}
		s.flush(out)
		if len(s.held) != 0 || s.heldBytes != 0 || out.at != s.offset {
			t.Fatalf("after flush: %d held (%d bytes), handed on to %d, at %d", len(s.held), s.heldBytes, out.at, s.offset)
		}
	})
}

// FuzzPacket decodes arbitrary frames of every link type sniff reads:
// it never panics, and whatever it reads as a segment is counted once.
func FuzzPacket(f *testing.F) {
	c := snifftest.NewConversation(f, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("request bytes"), 100)
	for _, p := range c.Packets {
		f.Add(p.Data, uint8(0))
	}
	f.Add(snifftest.Frame(f, layers.LinkTypeLinuxSLL2, c.Client, c.Server, 1, 2, snifftest.Flags{ACK: true}, []byte("x")), uint8(2))
	links := []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2,
		layers.LinkTypeNull, layers.LinkTypeLoop, layers.LinkTypeRaw}
	f.Fuzz(func(t *testing.T, data []byte, link uint8) {
		rec := &recorder{}
		s := New(rec, portServer(9001))
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(data), Length: len(data)}
		s.Packet(data, ci, links[int(link)%len(links)])
		s.Packet(data, ci, links[int(link)%len(links)])
		s.Finish("end of capture")
		st := s.Stats()
		if st.Packets != 2 || st.Segments+st.Other+st.Malformed != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
}
