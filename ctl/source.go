package ctl

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/capture"
	"github.com/snoopd/snoopd/ctl/pcapfile"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/sniff"
)

// eventFile is a file of events read in order: a JSON capture, or a
// packet capture turned into events.
type eventFile interface {
	// Next returns the next event or drop notice; io.EOF at the end.
	Next() (*snoopv1.WatchEventsResponse, error)
}

// packetFlags are the flags of the commands that read files, for packet
// captures.
func packetFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "server", Usage: "for a pcap or pcapng FILE: the distcache server's `ADDR` (IP:host:port, host:port, [v6]:port, or a bare port: any address with that port)"},
		&cli.StringFlag{Name: "name", Usage: "for a pcap or pcapng FILE: the proxy `NAME` its events carry (default: the file's base name)"},
	}
}

// fileReading is what read and plot need to read files of either kind:
// the packet flags, and what the packet captures read so far counted.
type fileReading struct {
	server    sniff.Server
	hasServer bool
	name      string
	data      bool

	pcaps   int         // packet captures read
	packets sniff.Stats // their counts, summed
}

// newFileReading reads the packet flags.
func newFileReading(cCtx *cli.Context, data bool) (*fileReading, error) {
	fr := &fileReading{name: cCtx.String("name"), data: data}
	if s := cCtx.String("server"); s != "" {
		srv, err := sniff.ParseServer(cCtx.Context, s)
		if err != nil {
			return nil, usagef("--server: %v", err)
		}
		fr.server, fr.hasServer = srv, true
	}
	return fr, nil
}

// openedFile is an eventFile with what must be closed after it.
type openedFile struct {
	eventFile
	pcap    *pcapfile.Reader // nil for a JSON capture
	closers []io.Closer
}

func (f *openedFile) Close() error {
	var err error
	for i := len(f.closers) - 1; i >= 0; i-- {
		if cerr := f.closers[i].Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// gzipMagic starts every gzip stream.
var gzipMagic = []byte{0x1f, 0x8b}

// open opens one file of events by name ("-" is stdin), gzip-compressed
// or not: a packet capture when its first bytes say pcap or pcapng (the
// packet flags then say how to read it), else a JSON capture.
func (fr *fileReading) open(name string, stdin io.Reader) (*openedFile, error) {
	f := &openedFile{}
	var r io.Reader = stdin
	label := "stdin"
	if name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		f.closers = append(f.closers, file)
		r, label = file, name
	}
	br := bufio.NewReaderSize(r, 64<<10)
	if !pcapfile.IsCapture(contentHead(br)) {
		// The JSON capture reader takes gzip itself, and says when the
		// compressed data ends early.
		cr, err := capture.NewReader(label, br)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.eventFile = cr
		f.closers = append(f.closers, cr)
		return f, nil
	}
	if head, _ := br.Peek(2); bytes.Equal(head, gzipMagic) {
		gz, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: not a readable gzip file: %w", label, err)
		}
		f.closers = append(f.closers, gz)
		br = bufio.NewReaderSize(gz, 64<<10)
	}
	if !fr.hasServer {
		f.Close()
		return nil, usagef("%s is a packet capture: --server ADDR says which end is the distcache server (a port such as 9001, or IP:10.0.0.5:9001)", label)
	}
	proxyName := fr.name
	if proxyName == "" {
		proxyName = filepath.Base(label)
	}
	pr, err := pcapfile.NewReader(br, pcapfile.Options{Server: fr.server, Name: proxyName, CaptureData: fr.data})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	f.eventFile, f.pcap = pcapEvents{pr, label}, pr
	return f, nil
}

// pcapEvents names its file in its errors, as a JSON capture's do.
type pcapEvents struct {
	*pcapfile.Reader
	label string
}

func (p pcapEvents) Next() (*snoopv1.WatchEventsResponse, error) {
	resp, err := p.Reader.Next()
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%s: %w", p.label, err)
	}
	return resp, err
}

// contentHead returns the first 4 bytes of what br holds, decompressed
// when it is gzip, without consuming anything: the first compressed bytes
// are peeked and decompressed apart. Fewer come back when there are fewer,
// or when the first 16 KiB do not decompress to 4 bytes.
func contentHead(br *bufio.Reader) []byte {
	if head, _ := br.Peek(2); !bytes.Equal(head, gzipMagic) {
		head, _ = br.Peek(4)
		return head
	}
	raw, _ := br.Peek(16 << 10) // fewer at the end of the input
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil
	}
	var head [4]byte
	n, _ := io.ReadFull(zr, head[:])
	return head[:n]
}

// done adds what a packet capture counted to the totals.
func (fr *fileReading) done(f *openedFile) {
	if f.pcap == nil {
		return
	}
	st := f.pcap.Stats()
	fr.pcaps++
	p := &fr.packets
	p.Packets += st.Packets
	p.Segments += st.Segments
	p.Other += st.Other
	p.Malformed += st.Malformed
	p.Truncated += st.Truncated
	p.Conns += st.Conns
	p.Gaps += st.Gaps
	p.BytesSkipped += st.BytesSkipped
	p.Retransmitted += st.Retransmitted
	p.Conflicts += st.Conflicts
	p.Evicted += st.Evicted
}

// writePackets prints what the packet captures counted, for read's
// summary: nothing when no packet capture was read.
func (fr *fileReading) writePackets(w io.Writer) {
	if fr.pcaps == 0 {
		return
	}
	p := fr.packets
	fmt.Fprintf(w, "  packets: %d read (%d other traffic, %d undecodable, %d cut by the snap length), %s, %s, %d bytes skipped\n",
		p.Packets, p.Other, p.Malformed, p.Truncated, count(p.Conns, "connection", "connections"),
		count(p.Gaps, "capture gap", "capture gaps"), p.BytesSkipped)
}

// isTruncated reports whether err is a file cut short, which is a
// warning: every event before the cut was read.
func isTruncated(err error) bool {
	return errors.Is(err, capture.ErrTruncated) || errors.Is(err, pcapfile.ErrTruncated)
}
