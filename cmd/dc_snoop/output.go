package main

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apievent"
	"github.com/snoopd/snoopd/proxy"
)

// queueLen is how many events may wait for the printer. A burst beyond it
// (a terminal that scrolls slowly, a full disk) costs printed lines, not
// forwarding: the proxy never waits for its output.
const queueLen = 8192

// flushAt is the buffered output at which the printer writes without
// waiting for the queue to run dry.
const flushAt = 32 << 10

// queue is the proxy's Sink: it copies each event into a bounded channel
// and drops it, counted, when the channel is full, so that the proxy's
// loops never wait on the printer.
type queue struct {
	events chan proxy.EventCopy
	// dropped counts every event dropped so far; it only grows.
	dropped atomic.Uint64
}

var _ proxy.Sink = (*queue)(nil)

func newQueue(n int) *queue { return &queue{events: make(chan proxy.EventCopy, n)} }

// Publish copies e into the queue, or counts it as dropped.
func (q *queue) Publish(e *proxy.Event) {
	var c proxy.EventCopy
	c.Set(e)
	select {
	case q.events <- c:
	default:
		q.dropped.Add(1)
	}
}

// printer writes the queued events: transactions and connections opening
// and closing to out (text lines or JSON lines), errors to errs (always
// text, for the person watching). It is owned by one goroutine.
type printer struct {
	out, errs io.Writer
	json      bool
	text      format.Text
	api       apievent.Builder
	outBuf    []byte
	errBuf    []byte
	writeErr  error  // the first failed write, reported once
	noted     uint64 // the queue's drops already told of
}

func newPrinter(out, errs io.Writer, json bool) *printer {
	return &printer{out: out, errs: errs, json: json, text: format.Text{Location: time.Local}}
}

// run prints what q holds until stop is closed, then what is left in q.
// The queue's channel is never closed (a proxy that did not stop in time
// could still publish), so stop says when to finish.
func (p *printer) run(q *queue, stop <-chan struct{}) {
	for {
		select {
		case c := <-q.events:
			p.print(&c)
			if len(q.events) == 0 || len(p.outBuf) >= flushAt {
				p.noteDropped(q)
				p.flush()
			}
		case <-stop:
			for {
				select {
				case c := <-q.events:
					p.print(&c)
				default:
					p.noteDropped(q)
					p.flush()
					return
				}
			}
		}
	}
}

// print renders one event into the buffer of the stream it belongs to.
func (p *printer) print(c *proxy.EventCopy) {
	e := c.Get()
	ev := p.api.Fill(e, false)
	if e.Kind.IsError() {
		p.errBuf = p.text.AppendEvent(p.errBuf, ev)
		return
	}
	if !p.json {
		p.outBuf = p.text.AppendEvent(p.outBuf, ev)
		return
	}
	b, err := format.AppendEventLine(p.outBuf, ev)
	if err != nil {
		p.errBuf = fmt.Appendf(p.errBuf, "dc_snoop: an event could not be written as JSON: %v\n", err)
		return
	}
	p.outBuf = append(b, '\n')
}

// noteDropped adds a line for the events the queue dropped since the last
// one, where the gap is: a JSON drop notice ({"dropped":N}, as snoopctl
// tail -o json writes it) or the text one.
func (p *printer) noteDropped(q *queue) {
	total := q.dropped.Load()
	n := total - p.noted
	if n == 0 {
		return
	}
	p.noted = total
	if !p.json {
		p.outBuf = format.AppendDropped(p.outBuf, n)
		return
	}
	if b, err := format.AppendResponseLine(p.outBuf, &snoopv1.WatchEventsResponse{Dropped: n}); err == nil {
		p.outBuf = append(b, '\n')
	}
}

// flush writes out both buffers. A failed write is reported once on
// stderr; forwarding goes on whatever happens to the output.
func (p *printer) flush() {
	p.outBuf = p.write(p.out, p.outBuf)
	p.errBuf = p.write(p.errs, p.errBuf)
}

func (p *printer) write(w io.Writer, b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	if _, err := w.Write(b); err != nil && p.writeErr == nil {
		p.writeErr = err
		fmt.Fprintf(p.errs, "dc_snoop: writing the output: %v (forwarding goes on)\n", err)
	}
	return b[:0]
}
