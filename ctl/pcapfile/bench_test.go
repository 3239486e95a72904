package pcapfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/snoopd/snoopd/sniff"
	"github.com/snoopd/snoopd/sniff/snifftest"
)

// BenchmarkReadCapture reads a capture of 8 connections, each the
// session of exchanges (an ADD of 3000 bytes, a GET hit, a GET miss, a
// REMOVE, a HAVE) 50 times over, in 1448-byte segments, into events: the
// cost of snoopctl read of a pcap file without the printing.
//
//	go test -run '^$' -bench ReadCapture -benchmem ./ctl/pcapfile
func BenchmarkReadCapture(b *testing.B) {
	var pkts []snifftest.Packet
	for i := range 8 {
		c := snifftest.NewConversation(b, layers.LinkTypeEthernet, fmt.Sprintf("10.1.0.1:%d", 40000+i), "10.1.0.2:9001")
		c.Handshake()
		for range 50 {
			for _, e := range session() {
				c.Send(true, e.req, 1448)
				c.Send(false, e.resp, 1448)
			}
		}
		c.CloseBoth()
		pkts = append(pkts, c.Packets...)
	}
	var file bytes.Buffer
	snifftest.WritePcap(b, &file, layers.LinkTypeEthernet, pkts)
	b.SetBytes(int64(file.Len()))
	var events int
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(file.Bytes()), Options{Server: sniff.Server{Port: 9001}, Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		events = 0
		for {
			if _, err := r.Next(); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
			events++
		}
	}
	if events != 8*(2+50*5) {
		b.Fatalf("%d events, want %d", events, 8*(2+50*5))
	}
	b.ReportMetric(float64(len(pkts))*float64(b.N)/b.Elapsed().Seconds(), "packets/s")
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
