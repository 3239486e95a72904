package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snoopd/snoopd/ctl/filter"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiwire"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/vocab"
)

// filterHelp documents the filters shared by tail, save, read and stats,
// in the vocabulary's words.
var filterHelp = func() string {
	var b strings.Builder
	b.WriteString("Filters: different flags must all match; the values of one flag (comma-separated\n" +
		"or repeated) are alternatives. --op, --status, --session and --min-latency keep\n" +
		"only transactions.\n\n")
	fmt.Fprintf(&b, "  --op         %s\n", strings.Join(vocab.OpNames(), ", "))
	b.WriteString(wrap("  --status     ", strings.Join(vocab.ResultNames(), ", ")))
	b.WriteString(wrap("  --events     ", strings.Join(vocab.KindGroupNames(), ", ")+" (conn: opened and closed)"))
	var bad []string
	for _, r := range vocab.Results() {
		if r.IsError() {
			bad = append(bad, r.String())
		}
	}
	b.WriteString(wrap("  --errors     ", "only errors: protocol errors, failed connects to the server, refused clients, and transactions whose result is "+vocab.List(bad)))
	b.WriteString("  --session    session id prefix in hex, whole bytes (0a1b2c)\n")
	b.WriteString(wrap("  --filter     ", "a CEL expression, evaluated by the daemon (and by read), e.g. "+
		`'op == "get" && result == "miss" && latency > duration("2ms")'. Variables:`))
	for _, v := range match.Variables {
		b.WriteString(wrap(fmt.Sprintf("      %-11s", v.Name), v.Type+": "+v.Help))
	}
	b.WriteString(wrap("      ", fmt.Sprintf("An expression is checked before it runs: at most %d bytes, and an estimated cost of at most %d per event "+
		"(about 50 µs). The pattern of matches must be a string literal; it costs its input's length times its compiled size, "+
		"so keep patterns short and anchored.", match.MaxExprLen, match.MaxWatchCost)))
	return b.String()
}()

// wrap indents text after head, wrapping at 80 columns.
func wrap(head, text string) string {
	var b strings.Builder
	line := head
	for _, w := range strings.Fields(text) {
		if len(line)+1+len(w) > 80 && len(line) > len(head) {
			b.WriteString(strings.TrimRight(line, " ") + "\n")
			line = strings.Repeat(" ", len(head))
		}
		if len(line) > len(head) && !strings.HasSuffix(line, " ") {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
	return b.String()
}

// filterFlags are the filter flags of tail, save, read, plot, stats and
// top --from. --proxy is the one way every one of them names proxies;
// the commands that read a daemon also take them as arguments.
func filterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "proxy", Usage: "keep events of these `PROXIES` (as PROXY arguments do)"},
		&cli.StringSliceFlag{Name: "op", Usage: "keep transactions of these `OPS` (get,add,remove,have)"},
		&cli.StringSliceFlag{Name: "status", Usage: "keep transactions with these `RESULTS` (ok,miss,...)"},
		&cli.StringFlag{Name: "session", Usage: "keep transactions whose session id starts with `ID`: text or hex as tail shows it, base64 as -o json prints it"},
		&cli.DurationFlag{Name: "min-latency", Usage: "keep transactions at least this slow (2ms)"},
		&cli.Uint64Flag{Name: "conn", Usage: "keep events of connection `ID`"},
		&cli.BoolFlag{Name: "errors", Usage: "keep only errors (the list of Filters above says which)"},
		&cli.StringSliceFlag{Name: "events", Usage: "keep these event `KINDS` (tx,conn,opened,closed,connect-failed,refused,protocol,gap,all)"},
		&cli.StringFlag{Name: "filter", Usage: "keep events for which the CEL `EXPR` is true (the list of Filters above names the variables)"},
		&cli.StringSliceFlag{Name: "fault", Usage: "keep transactions touched by these `FAULTS` (names; * for any)"},
	}
}

// stopFlags are the stop conditions of tail, save and stats, the start of
// the stream, and the priority snoopctl reads it at.
func stopFlags() []cli.Flag {
	return []cli.Flag{
		&cli.UintFlag{Name: "history", Usage: "start with up to `N` recent matching events the daemon still holds"},
		&cli.Int64Flag{Name: "count", Usage: "stop after `N` events"},
		&cli.DurationFlag{Name: "for", Usage: "stop after `DURATION`"},
		&cli.BoolFlag{Name: "wait", Usage: "accept PROXY names that do not exist yet, and wait for their events"},
		niceFlag(),
	}
}

// checkProxies makes an unknown proxy name an error at once, as in every
// other command, instead of a stream that never shows anything. With
// --wait, names of proxies still to be created are accepted.
//
// With --data it also warns about the proxies watched that capture no
// session data, whose transactions would come without it and without a
// word.
func (e *env) checkProxies(cCtx *cli.Context, c *client, action string, names []string) error {
	data := cCtx.Bool("data")
	if (len(names) == 0 || cCtx.Bool("wait")) && !data {
		return nil
	}
	ctx, cancel := e.callContext(cCtx.Context, 0)
	defer cancel()
	list, err := c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	if err != nil {
		return e.rpcError(err, action, "")
	}
	known := map[string]bool{}
	var bare []string // watched proxies that capture no data
	for _, p := range list.GetProxies() {
		name := p.GetSpec().GetName()
		known[name] = true
		if !p.GetSpec().GetCaptureData() && (len(names) == 0 || slices.Contains(names, name)) {
			bare = append(bare, name)
		}
	}
	if !cCtx.Bool("wait") {
		for _, n := range names {
			if !known[n] {
				return failf("%s: no proxy named %q (see 'snoopctl list'; --wait waits for it to be created)", action, n)
			}
		}
	}
	switch {
	case !data || len(bare) == 0:
	case len(bare) == 1:
		e.warnf("--data: proxy %s captures no session data (it was created without --capture-data), so its transactions come without it", bare[0])
	default:
		e.warnf("--data: proxies %s capture no session data (they were created without --capture-data), so their transactions come without it", vocab.List(bare))
	}
	return nil
}

// filterFromFlags is the one place where filter flags become a filter:
// the WatchEventsRequest for the daemon, and the same conditions for
// evaluating saved events. proxies come from the arguments (tail, save,
// stats), with those --proxy names added.
func filterFromFlags(cCtx *cli.Context, proxies []string) (filter.Filter, error) {
	for _, p := range cCtx.StringSlice("proxy") {
		if !slices.Contains(proxies, p) {
			proxies = append(slices.Clip(proxies), p)
		}
	}
	events := cCtx.StringSlice("events")
	if len(events) == 0 && hasFlag(cCtx, "verbose") && !cCtx.Bool("verbose") {
		// tail without -v: a connection per operation would otherwise
		// take three lines per transaction.
		events = quietEvents
	}
	f, err := filter.New(filter.Options{
		Proxies:    proxies,
		Ops:        cCtx.StringSlice("op"),
		Status:     cCtx.StringSlice("status"),
		Session:    cCtx.String("session"),
		MinLatency: cCtx.Duration("min-latency"),
		Conn:       cCtx.Uint64("conn"),
		Errors:     cCtx.Bool("errors"),
		Events:     events,
		Expr:       cCtx.String("filter"),
		Faults:     cCtx.StringSlice("fault"),
	})
	if err != nil {
		return filter.Filter{}, usagef("%v", err)
	}
	if note := filter.AmbiguousSession(cCtx.String("session")); note != "" {
		fmt.Fprintf(cCtx.App.ErrWriter, "snoopctl: note: %s\n", note)
	}
	return f, nil
}

// quietEvents are the events tail shows without -v or --events:
// transactions and errors, not connections opening and closing.
var quietEvents = []string{"tx", "connect-failed", "refused", "protocol"}

// hasFlag reports whether the command defines the flag name.
func hasFlag(cCtx *cli.Context, name string) bool {
	for _, f := range cCtx.Command.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

// watchFromFlags builds the full watch request: the filter, the history
// and whether to include session data.
func watchFromFlags(cCtx *cli.Context, proxies []string) (*snoopv1.WatchEventsRequest, filter.Filter, error) {
	f, err := filterFromFlags(cCtx, proxies)
	if err != nil {
		return nil, f, err
	}
	if cCtx.Int64("count") < 0 {
		return nil, f, usagef("--count %d is negative", cCtx.Int64("count"))
	}
	if cCtx.Duration("for") < 0 {
		return nil, f, usagef("--for %v is negative", cCtx.Duration("for"))
	}
	h := cCtx.Uint("history")
	if h > 1<<31 {
		return nil, f, usagef("--history %d is too large", h)
	}
	req := f.Request
	req.History = uint32(h)
	req.IncludeData = cCtx.Bool("data")
	req.MaxBatch = watchBatch
	return req, f, nil
}

// watchBatch is how many events snoopctl lets the daemon put in one
// response: one message per event cost the daemon and snoopctl more than
// the events themselves. A daemon that predates batching ignores it and
// sends one event per response, which stream handles the same.
const watchBatch = 256

// streamOptions are a stream's stop conditions and periodic work.
type streamOptions struct {
	action string        // names the command in errors: "tail"
	count  int64         // stop after this many events (0: no bound)
	dur    time.Duration // stop after this long (0: no bound)
	tick   time.Duration // call onTick this often (0: never)
	onTick func()
	// flush is called when no more responses are waiting, so that output
	// is written in batches under load and at once when it is quiet.
	flush func() error
	// wire, if set, takes the events of a daemon's stream in their wire
	// form (a snoop.v1.Event each), instead of handle decoded: a reader
	// that writes them as they are (tail -o json) need not decode them.
	// Notices still go to handle, and so does every event of a source
	// other than a single daemon.
	wire func(event []byte) error
}

// streamResult says how a stream went.
type streamResult struct {
	events  int64  // events handled (drop notices are not events)
	dropped uint64 // events the daemon dropped for this watcher
	elapsed time.Duration
}

type received struct {
	resp *snoopv1.WatchEventsResponse
	err  error
	// buf holds resp's storage, handed back to the receiver (free) once
	// resp is handled; nil for a response of its own.
	buf *apiwire.Response
}

// recvQueue bounds the responses read ahead of the handler. The daemon
// keeps its own bounded queue per watcher and counts what it drops; this
// one only smooths the hand-off. A response holds up to watchBatch events
// (and the daemon keeps it near 1 MiB), so a few are plenty, and the
// bound keeps a slow terminal from piling up memory here.
const recvQueue = 16

// stream watches events until ctx is cancelled (Ctrl-C), o.count events
// were handled, o.dur passed, or the stream fails. handle sees every drop
// notice and every event, one event per call whether the daemon batches
// events or not; handle must not keep the response it is given. The
// daemon has applied the whole filter (the matcher snoopctl read runs
// too), so nothing is filtered again here. Ending for one of the first
// three reasons is not an error.
func (e *env) stream(ctx context.Context, c *client, req *snoopv1.WatchEventsRequest, o streamOptions,
	handle func(*snoopv1.WatchEventsResponse) error) (streamResult, error) {
	s := &streamRun{o: o, handle: handle, start: time.Now()}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer relaxGC()()
	e.yield.yield(e.nice, c.local)
	// --for is a timer, not a context deadline: a deadline would travel
	// to the daemon, which would end the stream with DEADLINE_EXCEEDED,
	// indistinguishable from a daemon that is stuck.
	var stop <-chan time.Time
	if o.dur > 0 {
		t := time.NewTimer(o.dur)
		defer t.Stop()
		stop = t.C
	}
	st, err := c.events.WatchEvents(sctx, req, watchDecoding)
	if err != nil {
		if sctx.Err() != nil {
			return s.res, nil
		}
		return s.res, e.rpcError(err, o.action, "")
	}

	// One goroutine receives, so that the loop below can also serve
	// ticks (progress, periodic flushes) while the stream is quiet. It
	// ends when the stream fails or sctx is cancelled, which the deferred
	// cancel guarantees; wg makes stream wait for it.
	ch := make(chan received, recvQueue)
	free := make(chan *apiwire.Response, recvQueue+1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		receive(sctx, st, ch, free, o.wire != nil)
	}()
	defer wg.Wait()
	defer cancel()

	var tick <-chan time.Time
	if o.tick > 0 && o.onTick != nil {
		t := time.NewTicker(o.tick)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-sctx.Done():
			return s.finish()
		case <-stop:
			return s.finish()
		case <-tick:
			o.onTick()
		case m := <-ch:
			if m.err != nil {
				res, err := s.finish()
				if err != nil || sctx.Err() != nil {
					return res, err // a failed flush, or stopped by Ctrl-C or --for while receiving
				}
				return res, e.streamError(m.err, o.action, s.got)
			}
			var done bool
			var err error
			if m.buf != nil && m.buf.Wire != nil {
				done, err = s.deliverWire(m.buf.Wire)
			} else {
				done, err = s.deliver(m.resp)
			}
			if m.buf != nil {
				// Handled, and handlers keep nothing: its storage can
				// take the next response.
				select {
				case free <- m.buf:
				default: // more in flight than free holds: let it go
				}
			}
			if err != nil {
				return s.res, err
			} else if done {
				return s.finish()
			}
			if len(ch) == 0 {
				if err := s.flush(); err != nil {
					return s.res, err
				}
			}
		}
	}
}

// receive passes every response of st to ch, and the error that ends it,
// until ctx is cancelled. Each response is decoded into storage from free
// (the handler hands it back there) or new storage while all of it is in
// flight, so a long stream reuses a few responses' storage instead of
// allocating each anew. With raw, responses of events alone leave them in
// their wire form (apiwire.Response.Raw).
func receive(ctx context.Context, st interface{ RecvMsg(any) error }, ch chan<- received, free chan *apiwire.Response, raw bool) {
	for {
		var buf *apiwire.Response
		select {
		case buf = <-free:
		default:
			buf = new(apiwire.Response)
		}
		buf.Raw = raw
		err := st.RecvMsg(buf)
		m := received{resp: &buf.Msg, buf: buf, err: err}
		if err != nil {
			m.resp, m.buf = nil, nil
		}
		select {
		case ch <- m:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// streamRun is the state of one stream: what it counted, and whether
// anything arrived yet (for streamError's wording).
type streamRun struct {
	o      streamOptions
	handle func(*snoopv1.WatchEventsResponse) error
	start  time.Time
	res    streamResult
	got    bool
	// one carries each event of a batch to handle as the response an
	// unbatched stream would have sent, reused (handlers do not keep
	// what they are given).
	one snoopv1.WatchEventsResponse
}

// deliver hands one response to the handler, an event at a time. done
// reports that o.count events have been handled.
func (s *streamRun) deliver(r *snoopv1.WatchEventsResponse) (done bool, err error) {
	s.got = true
	evs := r.GetEvents()
	switch {
	case r.GetEvent() != nil:
		// One event per response: max_batch 0 or 1, or a daemon that
		// predates batching.
		evs = nil
		s.res.events++
		if err := s.handle(r); err != nil {
			return false, err
		}
	case len(evs) == 0:
		s.res.dropped += r.GetDropped()
		if err := s.handle(r); err != nil {
			return false, err
		}
	}
	for _, ev := range evs {
		if s.o.count > 0 && s.res.events >= s.o.count {
			break
		}
		s.res.events++
		s.one.Event = ev
		if err := s.handle(&s.one); err != nil {
			return false, err
		}
	}
	return s.o.count > 0 && s.res.events >= s.o.count, nil
}

// deliverWire hands the events of a raw response to o.wire, one at a
// time, as deliver does with decoded ones.
func (s *streamRun) deliverWire(evs [][]byte) (done bool, err error) {
	s.got = true
	for _, ev := range evs {
		if s.o.count > 0 && s.res.events >= s.o.count {
			break
		}
		s.res.events++
		if err := s.o.wire(ev); err != nil {
			return false, err
		}
	}
	return s.o.count > 0 && s.res.events >= s.o.count, nil
}

// flush writes out what the handler buffered, if it buffers.
func (s *streamRun) flush() error {
	if s.o.flush == nil {
		return nil
	}
	return s.o.flush()
}

// finish ends a stream: it records the time it ran and flushes.
func (s *streamRun) finish() (streamResult, error) {
	s.res.elapsed = time.Since(s.start)
	err := s.flush()
	return s.res, err
}

// streamError explains how an event stream ended against the user's will.
func (e *env) streamError(err error, action string, got bool) error {
	if errors.Is(err, io.EOF) {
		return failf("%s: snoopd ended the event stream (is it shutting down?)", action)
	}
	if got && status.Code(err) == codes.Unavailable {
		reason, _ := plainReason(status.Convert(err).Message())
		return failf("%s: the event stream from snoopd at %s broke: %s", action, e.display(), reason)
	}
	return e.rpcError(err, action, "")
}

// relaxGC lets the collector run a quarter as often while streams are
// read, unless GOGC says otherwise, and returns what puts it back when the
// last of them ends. A stream's live heap is small (the responses in
// flight, at most recvQueue of them), and with the default a busy tail
// spent about a tenth of its CPU collecting the garbage every response
// leaves.
func relaxGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	gc.Lock()
	defer gc.Unlock()
	if gc.streams == 0 {
		gc.old = debug.SetGCPercent(400)
	}
	gc.streams++
	return func() {
		gc.Lock()
		defer gc.Unlock()
		if gc.streams--; gc.streams == 0 {
			debug.SetGCPercent(gc.old)
		}
	}
}

// gc counts the streams that relaxed the collector.
var gc struct {
	sync.Mutex
	streams, old int
}
