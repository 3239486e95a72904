package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/vocab"
)

// summaryWidth is where the summary's lines wrap.
const summaryWidth = 76

// summary is the paragraph dc_snoop writes when it stops: how long it ran,
// its connections, its transactions by operation and result, the bytes
// each way and the protocol errors, from the proxy's own counters (so it
// counts what the printer may have dropped too), and the events it did
// not print, if any.
func summary(s *proxy.Stats, elapsed time.Duration, dropped uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dc_snoop: stopped after %s. %s", elapsed.Round(time.Millisecond), plural(s.ConnsTotal, "connection"))
	if s.ConnsRefused > 0 || s.ConnectFailed > 0 {
		fmt.Fprintf(&b, " (%d refused, %d failed to connect to the server)", s.ConnsRefused, s.ConnectFailed)
	}
	fmt.Fprintf(&b, ", %s", plural(s.Transactions(), "transaction"))
	sep := ": "
	for op := distcache.Op(0); op < distcache.NumOps; op++ {
		results := s.Results[op]
		var total int64
		var parts []string
		for _, r := range vocab.Results() {
			if n := results[r.String()]; n > 0 {
				total += n
				parts = append(parts, fmt.Sprintf("%s %d", r, n))
			}
		}
		if total == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s%s %d (%s)", sep, vocab.OpName(op), total, strings.Join(parts, ", "))
		sep = ", "
	}
	fmt.Fprintf(&b, "; %d bytes up, %d down; %s", s.BytesUp, s.BytesDown, plural(s.ProtocolErrors, "protocol error"))
	if s.Timeouts > 0 {
		fmt.Fprintf(&b, "; %s closed by a timeout", plural(s.Timeouts, "connection"))
	}
	if dropped > 0 {
		fmt.Fprintf(&b, "; %s not printed (the output fell behind; the traffic was not slowed)", plural(int64(dropped), "event"))
	}
	b.WriteString(".")
	return wrap(b.String(), summaryWidth)
}

// writeSummary writes the summary to w.
func writeSummary(w io.Writer, s *proxy.Stats, elapsed time.Duration, dropped uint64) {
	io.WriteString(w, summary(s, elapsed, dropped))
}

// plural is "1 connection" or "N connections".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// wrap breaks s into lines of at most width bytes at spaces (a longer
// word stands alone), each ending in a newline.
func wrap(s string, width int) string {
	var b strings.Builder
	line := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && line+1+len(word) > width {
			b.WriteByte('\n')
			line = 0
		} else if i > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(word)
		line += len(word)
	}
	b.WriteByte('\n')
	return b.String()
}
