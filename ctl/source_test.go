package ctl

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/sniff/snifftest"
)

func gzipped(p []byte) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(p)
	zw.Close()
	return b.Bytes()
}

// One opener tells the kinds of file apart by their content, compressed
// or not: a gzip-compressed pcap from stdin is a packet capture, and a
// gzip-compressed JSON capture cut short is still the warning it was.
func TestReadTellsPacketCapturesFromJSONCaptures(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeRaw, "10.0.0.7:40000", "10.0.0.5:9000")
	c.Handshake()
	c.Send(true, distcache.AppendMessage(nil, false, 9, distcache.OpHave, []byte("s")), 1448)
	c.Send(false, distcache.AppendMessage(nil, true, 9, distcache.OpHave, []byte{byte(distcache.StatusOK)}), 1448)
	c.CloseBoth()
	var pcap bytes.Buffer
	snifftest.WritePcap(t, &pcap, c.Link, c.Packets)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := runCtl(ctx, string(gzipped(pcap.Bytes())), "read", "-", "--server", "9000")
	wantOK(t, r)
	if !strings.Contains(r.out, " stdin conn=1 uid=9 HAVE id=s req=1 resp=1 ok ") || !strings.Contains(r.err, "packets: 8 read") {
		t.Fatalf("read - of a gzip pcap: %v", r)
	}
	wantFail(t, runCtl(ctx, pcap.String(), "read", "-"), ExitUsage, "stdin is a packet capture: --server ADDR")

	dir := t.TempDir()
	data := "{\"dropped\":\"1\"}\n{\"dropped\":\"2\"}\n"
	cut := gzipped([]byte(data))
	file := filepath.Join(dir, "cut.jsonl.gz")
	os.WriteFile(file, cut[:len(cut)-6], 0o600)
	r = run(t, "read", file)
	wantOK(t, r)
	if !strings.Contains(r.err, "the compressed data ends early") {
		t.Fatalf("read of a cut gzip capture: %v", r)
	}
	// --server is for packet captures; a JSON capture reads as before.
	r = run(t, "read", "--server", "9000", file)
	wantOK(t, r)
}
