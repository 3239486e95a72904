package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apijson"
	"github.com/snoopd/snoopd/internal/apiwire"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/proxy"
)

// Payload formats and the Content-Type header that names them.
const (
	FormatProtobuf = "protobuf"
	FormatJSON     = "json"

	ContentTypeProtobuf = "application/protobuf; proto=snoop.v1.Event"
	ContentTypeJSON     = "application/json"
	// With Config.Batch above 1 a message carries several events of one
	// subject as a snoop.v1.WatchEventsResponse (its events field), and
	// HeaderEvents says how many.
	ContentTypeProtobufBatch = "application/protobuf; proto=snoop.v1.WatchEventsResponse"
	ContentTypeJSONBatch     = "application/json; proto=snoop.v1.WatchEventsResponse"
	// HeaderContentType is the header every exported message carries.
	HeaderContentType = "Content-Type"
	// HeaderEvents counts the events of a batched message.
	HeaderEvents = "Snoop-Events"
)

// Defaults for Config fields left zero.
const (
	DefaultSubject     = "snoop"
	DefaultStream      = "SNOOP"
	DefaultMaxPending  = 4096
	DefaultLogInterval = 10 * time.Second
	// DefaultBatch and DefaultFlushInterval: a message every 100 ms per
	// subject, or sooner when 1,024 events are in it. A busy subject
	// fills its batch before the interval is over (at 15,000 GETs a
	// second, 256 events are 17 ms), and what the NATS server spends
	// follows how often it is sent a message: per transaction 0.7 µs
	// with these, 0.9 µs with 256, 7.8 µs one event a message
	// (docs/fleet.md, "What one host costs").
	DefaultBatch         = 1024
	DefaultFlushInterval = 100 * time.Millisecond
	// maxBatchBytes closes a batch early when its payload reaches this
	// size (or the server's max_payload, less room for the headers, if
	// that is smaller), so that events carrying captured session data
	// still fit in a message.
	maxBatchBytes = 256 << 10
	// reconnectWait is the pause between reconnect attempts to the same
	// server; nats.go adds jitter.
	reconnectWait = time.Second
	// streamRetry is how often a missing stream is looked for again
	// while events are dropped for want of it.
	streamRetry = time.Second
	// freeBuffers bounds the batch buffers kept for reuse.
	freeBuffers = 16
	// maxSubjects bounds the subject cache (proxies come and go).
	maxSubjects = 4096
)

// ackTimeout bounds how long a publish may wait for JetStream's
// acknowledgement before it counts as dropped. A variable so that tests
// can see a timeout come without waiting seconds for it.
var ackTimeout = 5 * time.Second

// Config configures an Exporter.
type Config struct {
	// Servers are the NATS URLs (nats://host:port, tls://host:port).
	Servers []string
	// Subject is the subject prefix (DefaultSubject if empty).
	Subject string
	// Daemon is this daemon's name: the second subject token, and
	// Event.daemon in every payload.
	Daemon string
	// Stream is the JetStream stream to create or reuse over Subject.>;
	// empty publishes on core NATS only, without acknowledgements.
	Stream string
	// MaxAge and MaxBytes bound a stream the exporter creates (0: no
	// bound).
	MaxAge   time.Duration
	MaxBytes int64
	// Format is FormatProtobuf (the default) or FormatJSON.
	Format string
	// Data exports captured session data (the proxy must capture it too).
	Data bool
	// Filter selects the events to export, in the watchers' language;
	// the zero Spec takes all.
	Filter match.Spec
	// Options are extra nats.go options: TLS, credentials, token.
	Options []nats.Option
	// MaxPending bounds the publishes waiting for an acknowledgement.
	MaxPending int
	// LogInterval is how often a line is logged while events are
	// dropped.
	LogInterval time.Duration
	// Batch, above 1, puts up to that many events of one subject in a
	// message (a snoop.v1.WatchEventsResponse): the NATS server stores
	// and the exporter sends one message instead of many, which is what
	// keeps an export's cost within a few percent at high rates. 1
	// publishes each event as a snoop.v1.Event of its own, at once; 0 is
	// DefaultBatch.
	Batch int
	// FlushInterval is the longest a batched event waits for the rest of
	// its batch (DefaultFlushInterval if zero). The NATS server's cost
	// per event falls with how seldom it is sent a message (docs/fleet.md:
	// 1.7 µs a transaction in batches of 64 every 10 ms, 0.7 µs with the
	// defaults).
	FlushInterval time.Duration
	// Logger receives the exporter's logs; nil discards them.
	Logger *slog.Logger
}

// Exporter publishes a hub's events to NATS.
type Exporter struct {
	cfg     Config
	log     *slog.Logger
	servers string
	w       *hub.Watcher
	nc      *nats.Conn
	js      jetstream.JetStream // nil for core NATS
	header  nats.Header         // shared by every message, never changed

	// Counters; see Stats.
	seen      atomic.Uint64 // events the hub handed over, and hub drops
	published atomic.Uint64
	dropped   atomic.Uint64
	// streamOK is set once the stream is known to exist on the current
	// connection; a reconnect clears it.
	streamOK atomic.Bool
	// stopped is set once Close has counted everything: Stats then reads
	// no backlog (the watcher is gone and what it held is counted
	// dropped).
	stopped atomic.Bool

	// inflight holds the events of each JetStream publish not yet
	// resolved, by its message (nats.go hands the same *nats.Msg to the
	// acknowledgement and error handlers). A message is counted, as
	// published or dropped, by whichever of its outcomes takes it out of
	// here first: its acknowledgement, an error or an acknowledgement
	// timeout from nats.go, a failed publish, or Close. nats.go may
	// report one message more than once (an ack timer firing after the
	// connection closed, an error on a retried publish), and a message
	// carries up to Batch events, so counting anything else would count
	// messages, or count twice.
	inflightMu sync.Mutex
	inflight   map[*nats.Msg]uint64

	// daemonField is Event.daemon, this daemon's name, in wire form:
	// appended to each event the hub encoded.
	daemonField []byte

	// Owned by the publishing goroutine.
	scratch    []byte        // an event's protobuf form, for JSON
	ev         snoopv1.Event // scratch decoding it
	subjects   map[subjectKey]string
	lastLookup time.Time
	// groups collects the encoded events of each subject until their
	// message is due (Batch > 1); open lists the groups holding events,
	// oldest first, and pending counts those events; flushAt is when
	// the oldest of them must go.
	groups  map[string]*group
	open    []*group
	pending int
	flushAt time.Time

	// free holds batch buffers JetStream is done with (acknowledged or
	// given up), for the next batches: a busy exporter would otherwise
	// allocate a buffer of up to 256 KiB for every message.
	free chan []byte

	done     chan struct{} // the publishing goroutine ended
	stopLog  chan struct{}
	logDone  chan struct{}
	stopOnce sync.Once
}

// group is one subject's batch: its events encoded as a
// WatchEventsResponse's events field (protobuf) or as the elements of
// {"events":[...]} (JSON), not yet published.
type group struct {
	subject string
	buf     []byte
	n       int
	open    bool // listed in Exporter.open
	last    int  // the size of the last message, to size the next buffer
}

type subjectKey struct {
	proxy string
	kind  proxy.EventKind
	op    distcache.Op
	hasOp bool
}

// Start connects to NATS and starts exporting h's events. A server that
// cannot be reached now is not an error: the exporter keeps trying, and
// counts what it drops meanwhile. Configuration errors are.
func Start(h *hub.Hub, cfg Config) (*Exporter, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("no NATS server to export to")
	}
	if cfg.Subject == "" {
		cfg.Subject = DefaultSubject
	}
	if !ValidPrefix(cfg.Subject) {
		return nil, fmt.Errorf("subject prefix %q: want dot-separated tokens without spaces, '*' or '>' (snoop, or acme.snoop)", cfg.Subject)
	}
	switch cfg.Format {
	case "":
		cfg.Format = FormatProtobuf
	case FormatProtobuf, FormatJSON:
	default:
		return nil, fmt.Errorf("format %q: want %s or %s", cfg.Format, FormatProtobuf, FormatJSON)
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.LogInterval <= 0 {
		cfg.LogInterval = DefaultLogInterval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxAge < 0 || cfg.MaxBytes < 0 {
		return nil, errors.New("stream limits must not be negative")
	}
	filter, err := daemon.HubFilter(cfg.Filter, cfg.Daemon)
	if err != nil {
		return nil, fmt.Errorf("export filter: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	x := &Exporter{
		cfg:      cfg,
		log:      log,
		servers:  strings.Join(cfg.Servers, ","),
		header:   nats.Header{HeaderContentType: []string{ContentTypeProtobuf}},
		subjects: map[subjectKey]string{},
		groups:   map[string]*group{},
		inflight: map[*nats.Msg]uint64{},
		free:     make(chan []byte, freeBuffers),
		done:     make(chan struct{}),
		stopLog:  make(chan struct{}),
		logDone:  make(chan struct{}),
	}
	if cfg.Daemon != "" {
		x.daemonField = protowire.AppendTag(nil, daemonFieldNumber, protowire.BytesType)
		x.daemonField = protowire.AppendString(x.daemonField, cfg.Daemon)
	}
	if cfg.Format == FormatJSON {
		x.header[HeaderContentType] = []string{ContentTypeJSON}
	}

	opts := append([]nats.Option{
		nats.Name("snoopd " + cfg.Daemon),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.RetryOnFailedConnect(true),
		// No reconnect buffer: what cannot be sent now is dropped and
		// counted here, rather than held in memory, sent later and
		// counted as lost because its acknowledgement never came.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("export connected", "server", c.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			x.streamOK.Store(false)
			if !c.IsClosed() { // Close disconnects too
				log.Warn("export disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			x.streamOK.Store(false)
			log.Info("export reconnected", "server", c.ConnectedUrlRedacted())
		}),
		nats.ReconnectErrHandler(func(c *nats.Conn, err error) {
			log.Debug("export reconnect attempt failed", "err", err)
		}),
	}, cfg.Options...)
	nc, err := nats.Connect(x.servers, opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", x.servers, err)
	}
	x.nc = nc
	if cfg.Stream != "" {
		x.js, err = jetstream.New(nc,
			jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
			jetstream.WithPublishAsyncTimeout(ackTimeout),
			jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
				x.settle(m, true)
			}),
			jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, _ error) {
				x.settle(m, false)
			}),
		)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("JetStream: %w", err)
		}
	}
	x.w = h.Watch(hub.WatchOptions{Filter: filter})
	go x.run()
	go x.logDrops()
	return x, nil
}

// run publishes the hub's events until the hub or the watcher is closed.
// Batched events wait in their subject's group until it is full or
// FlushInterval has passed since the oldest of them came; what is still
// waiting when the hub closes is published before run returns.
func (x *Exporter) run() {
	defer close(x.done)
	for {
		ctx, cancel := context.Background(), context.CancelFunc(nil)
		if x.pending > 0 {
			ctx, cancel = context.WithDeadline(ctx, x.flushAt)
		}
		b, err := x.w.Next(ctx)
		if cancel != nil {
			cancel()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			x.flush()
			continue
		}
		if err != nil {
			// hub.ErrClosed: Next returned everything queued first.
			x.flush()
			return
		}
		x.seen.Add(uint64(len(b.Records)) + b.Dropped)
		x.dropped.Add(b.Dropped)
		if x.cfg.Batch == 1 {
			x.publish(b.Records)
			continue
		}
		x.collect(b.Records)
		if x.pending > 0 && !time.Now().Before(x.flushAt) {
			x.flush()
		}
	}
}

// publishAsync hands msg, carrying n events, to JetStream, recording it
// in flight first: its acknowledgement may come before PublishMsgAsync
// returns. It reports whether the publish failed with msg still the
// caller's to count (nats.go may already have reported it: a disconnect
// fails every publish pending, this one included).
func (x *Exporter) publishAsync(msg *nats.Msg, n uint64) (failed bool, err error) {
	x.inflightMu.Lock()
	x.inflight[msg] = n
	x.inflightMu.Unlock()
	if _, err = x.js.PublishMsgAsync(msg); err != nil {
		_, failed = x.take(msg)
		return failed, err
	}
	return false, nil
}

// take removes msg from the publishes in flight and returns its events;
// ok is false if it was resolved already.
func (x *Exporter) take(msg *nats.Msg) (n uint64, ok bool) {
	x.inflightMu.Lock()
	defer x.inflightMu.Unlock()
	n, ok = x.inflight[msg]
	delete(x.inflight, msg)
	return n, ok
}

// settle counts the events of a publish JetStream acknowledged (acked) or
// gave up on, once: a message resolved already is not counted again, and
// its buffer is not recycled again either (it may already be another
// batch's).
func (x *Exporter) settle(msg *nats.Msg, acked bool) {
	n, ok := x.take(msg)
	if !ok {
		return
	}
	if acked {
		x.published.Add(n)
	} else {
		x.dropped.Add(n)
	}
	x.recycle(msg)
}

// dropInflight counts every publish still in flight as dropped: their
// acknowledgements can no longer come.
func (x *Exporter) dropInflight() {
	x.inflightMu.Lock()
	var n uint64
	for _, k := range x.inflight {
		n += k
	}
	clear(x.inflight)
	x.inflightMu.Unlock()
	x.dropped.Add(n)
}

// publish sends each event as a message of its own (Batch 1); what
// cannot go is counted dropped.
func (x *Exporter) publish(evs []hub.Record) {
	if !x.nc.IsConnected() || !x.ensureStream() {
		x.dropped.Add(uint64(len(evs)))
		return
	}
	for i := range evs {
		e := &evs[i]
		if x.js != nil && x.js.PublishAsyncPending() >= x.cfg.MaxPending {
			// JetStream is behind: waiting here would only fill the
			// queue; the events go now, counted.
			x.dropped.Add(uint64(len(evs) - i))
			return
		}
		msg, err := x.message(e)
		if err != nil {
			x.dropped.Add(1)
			x.log.Debug("export: encoding an event failed", "err", err)
			continue
		}
		failed := false
		if x.js != nil {
			failed, err = x.publishAsync(msg, 1)
		} else if err = x.nc.PublishMsg(msg); err == nil {
			x.published.Add(1)
		} else {
			failed = true
		}
		if err != nil {
			// Disconnected (no reconnect buffer) or closed: the rest
			// of the batch would fail the same way.
			rest := uint64(len(evs) - i - 1)
			if failed {
				rest++
			}
			x.dropped.Add(rest)
			return
		}
	}
}

// collect encodes evs into their subjects' groups, publishing a group
// that is full. The order of one subject's events is kept; between
// subjects it is not (they are different messages).
func (x *Exporter) collect(evs []hub.Record) {
	limit := x.batchBytes()
	for i := range evs {
		e := &evs[i]
		g := x.group(x.subject(e))
		if g.n == 0 {
			g.buf = x.openBatch(g.buf, g.last)
		}
		var err error
		if g.buf, err = x.appendBatched(g.buf, g.n, e); err != nil {
			x.dropped.Add(1)
			x.log.Debug("export: encoding an event failed", "err", err)
			if g.n == 0 {
				g.buf = g.buf[:0] // openBatch starts it again
			}
			continue
		}
		g.n++
		x.pending++
		if !g.open {
			g.open = true
			x.open = append(x.open, g)
			if x.pending == 1 {
				x.flushAt = time.Now().Add(x.cfg.FlushInterval)
			}
		}
		if g.n >= x.cfg.Batch || len(g.buf) >= limit {
			x.send(g)
		}
	}
}

// group returns subject's group, made on first use. The groups are
// forgotten when there are too many (proxies come and go).
func (x *Exporter) group(subject string) *group {
	if g := x.groups[subject]; g != nil {
		return g
	}
	if len(x.groups) >= maxSubjects {
		x.flush()
		clear(x.groups)
	}
	g := &group{subject: subject}
	x.groups[subject] = g
	return g
}

// flush publishes every group holding events.
func (x *Exporter) flush() {
	for _, g := range x.open {
		if g.n > 0 {
			x.send(g)
		}
		g.open = false
	}
	clear(x.open)
	x.open = x.open[:0]
}

// send publishes g's events as one message and empties g; what cannot go
// is counted dropped.
func (x *Exporter) send(g *group) {
	n := g.n
	x.pending -= n
	g.n = 0
	if !x.nc.IsConnected() || !x.ensureStream() ||
		(x.js != nil && x.js.PublishAsyncPending() >= x.cfg.MaxPending) {
		// Down, or JetStream is behind: waiting here would only fill
		// the hub's queue; the events go now, counted.
		x.dropped.Add(uint64(n))
		g.buf = g.buf[:0]
		return
	}
	data := g.buf
	ct := ContentTypeProtobufBatch
	if x.cfg.Format == FormatJSON {
		ct = ContentTypeJSONBatch
		data = append(data, "]}"...)
	}
	g.last = len(data)
	msg := &nats.Msg{Subject: g.subject, Data: data,
		Header: nats.Header{HeaderContentType: []string{ct}, HeaderEvents: []string{strconv.Itoa(n)}}}
	var err error
	failed := false
	if x.js != nil {
		// The message is the publisher's until acknowledged (it is
		// resent if JetStream had no responder yet): the group takes
		// another buffer, and this one comes back through recycle.
		g.buf = nil
		select {
		case g.buf = <-x.free:
		default:
		}
		failed, err = x.publishAsync(msg, uint64(n))
	} else {
		// Core NATS copies the message into its write buffer.
		g.buf = g.buf[:0]
		if err = x.nc.PublishMsg(msg); err == nil {
			x.published.Add(uint64(n))
		} else {
			failed = true
		}
	}
	if failed {
		x.dropped.Add(uint64(n))
	}
	if err != nil {
		x.log.Debug("export: publishing failed", "subject", g.subject, "events", n, "err", err)
	}
}

// recycle keeps the buffer of a batch JetStream is done with. nats.go
// forgets a message once it has called the acknowledgement or error
// handler with it (settle calls this once per message, however often
// nats.go reports it).
func (x *Exporter) recycle(m *nats.Msg) {
	if m == nil || m.Header.Get(HeaderEvents) == "" || cap(m.Data) > 2*maxBatchBytes {
		return
	}
	select {
	case x.free <- m.Data[:0]:
	default:
	}
}

// batchBytes is the payload size at which a batch is sent before it is
// full.
func (x *Exporter) batchBytes() int {
	limit := maxBatchBytes
	if m := int(x.nc.MaxPayload()) - 4<<10; m > 0 && m < limit {
		limit = m
	}
	return limit
}

// openBatch starts a batch's payload in buf (empty), with room for about
// last bytes.
func (x *Exporter) openBatch(buf []byte, last int) []byte {
	if buf == nil {
		buf = make([]byte, 0, max(last+last/4, 4<<10))
	}
	if x.cfg.Format == FormatJSON {
		buf = append(buf, `{"events":[`...)
	}
	return buf
}

// appendBatched appends e, the batch's event number i, to the payload.
func (x *Exporter) appendBatched(buf []byte, i int, r *hub.Record) ([]byte, error) {
	if x.cfg.Format == FormatJSON {
		// An element of {"events":[...]}.
		start := len(buf)
		if i > 0 {
			buf = append(buf, ',')
		}
		out, err := x.appendJSON(buf, r)
		if err != nil {
			return buf[:start], err
		}
		return out, nil
	}
	// A WatchEventsResponse's events field, without building one.
	at := apiwire.OpenMessage(&buf, eventsField)
	buf = x.appendProtobuf(buf, r)
	return apiwire.CloseMessage(buf, at), nil
}

// appendProtobuf appends the event as the hub encoded it, its captured
// data if exported, and this daemon's name: a protobuf message is its
// fields one after the other, and a field may come in any order.
func (x *Exporter) appendProtobuf(buf []byte, r *hub.Record) []byte {
	buf = append(buf, r.Wire...)
	if x.cfg.Data {
		buf = append(buf, r.Data...)
	}
	return append(buf, x.daemonField...)
}

// appendJSON appends the event in JSON: the hub's encoding decoded into
// one reused message, written by the hand JSON encoder.
func (x *Exporter) appendJSON(buf []byte, r *hub.Record) ([]byte, error) {
	x.scratch = x.appendProtobuf(x.scratch[:0], r)
	if err := proto.Unmarshal(x.scratch, &x.ev); err != nil {
		return buf, err
	}
	return apijson.AppendEvent(buf, &x.ev, jsonKeys)
}

// jsonKeys are the JSON payloads' keys: protojson's default
// lowerCamelCase JSON names, which the export has always written.
const jsonKeys = apijson.CamelKeys

// eventsField is WatchEventsResponse.events's field number: a batch's
// payload is the events appended as that repeated field, which is a
// WatchEventsResponse on the wire without building one.
var eventsField = (&snoopv1.WatchEventsResponse{}).ProtoReflect().Descriptor().Fields().ByName("events").Number()

// daemonFieldNumber is Event.daemon's field number.
var daemonFieldNumber = (&snoopv1.Event{}).ProtoReflect().Descriptor().Fields().ByName("daemon").Number()

// message renders e as the exporter publishes it.
func (x *Exporter) message(e *hub.Record) (*nats.Msg, error) {
	var data []byte
	var err error
	if x.cfg.Format == FormatJSON {
		data, err = x.appendJSON(make([]byte, 0, 512), e)
	} else {
		data = x.appendProtobuf(make([]byte, 0, len(e.Wire)+len(e.Data)+len(x.daemonField)), e)
	}
	if err != nil {
		return nil, err
	}
	// The message is the publisher's until acknowledged (it is resent
	// if JetStream had no responder yet), so it is never reused.
	return &nats.Msg{Subject: x.subject(e), Data: data, Header: x.header}, nil
}

// subject returns e's subject, cached per proxy, kind and operation.
func (x *Exporter) subject(r *hub.Record) string {
	e := &r.View
	k := subjectKey{proxy: e.Proxy, kind: e.Kind}
	if e.Kind == proxy.KindTransaction {
		k.op, k.hasOp = e.Op, true
	}
	if s, ok := x.subjects[k]; ok {
		return s
	}
	if len(x.subjects) >= maxSubjects {
		clear(x.subjects)
	}
	s := Subject(x.cfg.Subject, x.cfg.Daemon, e.Proxy, e.Kind, k.op, k.hasOp)
	x.subjects[k] = s
	return s
}

// ensureStream makes sure the stream exists on the current connection:
// it is created if missing and reused if there; a stream that does not
// take PREFIX.> is reported and not touched. It looks at most once per
// streamRetry while it fails.
func (x *Exporter) ensureStream() bool {
	if x.js == nil || x.streamOK.Load() {
		return true
	}
	if time.Since(x.lastLookup) < streamRetry {
		return false
	}
	x.lastLookup = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	want := x.cfg.Subject + ".>"
	s, err := x.js.Stream(ctx, x.cfg.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = x.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        x.cfg.Stream,
			Description: "snoopd events (" + want + ")",
			Subjects:    []string{want},
			MaxAge:      x.cfg.MaxAge,
			MaxBytes:    nonZero(x.cfg.MaxBytes),
			Storage:     jetstream.FileStorage,
			Discard:     jetstream.DiscardOld,
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			x.log.Warn("export: creating the stream failed; dropping events until it exists", "stream", x.cfg.Stream, "err", err)
			return false
		}
		x.log.Info("export: stream created", "stream", x.cfg.Stream, "subjects", want, "max_age", x.cfg.MaxAge, "max_bytes", x.cfg.MaxBytes)
	case err != nil:
		x.log.Warn("export: looking up the stream failed; dropping events until it answers", "stream", x.cfg.Stream, "err", err)
		return false
	default:
		if !covers(s.CachedInfo().Config.Subjects, want) {
			x.log.Warn("export: the stream exists but does not take the export subjects; dropping events", "stream", x.cfg.Stream,
				"subjects", s.CachedInfo().Config.Subjects, "want", want)
			return false
		}
	}
	x.streamOK.Store(true)
	return true
}

func covers(subjects []string, want string) bool {
	for _, s := range subjects {
		if s == want || s == ">" {
			return true
		}
	}
	return false
}

// nonZero maps "no bound" (0) to JetStream's -1.
func nonZero(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// logDrops logs one line per interval while events are dropped.
func (x *Exporter) logDrops() {
	defer close(x.logDone)
	t := time.NewTicker(x.cfg.LogInterval)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-x.stopLog:
			return
		case <-t.C:
		}
		s := x.Stats()
		if s.GetDropped() > last {
			x.log.Warn("export dropping events", "dropped", s.GetDropped()-last, "interval", x.cfg.LogInterval,
				"connected", s.GetConnected(), "published_total", s.GetPublished(), "dropped_total", s.GetDropped(),
				"matched_total", s.GetMatched())
			last = s.GetDropped()
		}
	}
}

// Stats are the exporter's counters, in events. published + dropped +
// queued = matched, where queued (not reported) is what waits in the hub
// queue, in the batch being published and for an acknowledgement; once
// Close has returned, queued is 0 and the counters no longer change.
func (x *Exporter) Stats() *snoopv1.ExportStats {
	var queued int
	var hubDropped uint64
	if !x.stopped.Load() {
		queued, hubDropped = x.w.Backlog()
	}
	// Read the outcomes before seen, so that a batch being counted
	// between the reads can only make matched look larger.
	pub, drop := x.published.Load(), x.dropped.Load()
	return &snoopv1.ExportStats{
		Servers:       x.servers,
		SubjectPrefix: x.cfg.Subject,
		Stream:        x.cfg.Stream,
		Connected:     x.nc.IsConnected(),
		Published:     pub,
		Dropped:       drop + hubDropped,
		Matched:       x.seen.Load() + uint64(queued) + hubDropped,
	}
}

// Close ends the export. Call it after the hub is closed, so the events
// still queued are published first; if that takes longer than timeout,
// or the hub is still open, the rest is dropped. It then waits, within
// timeout, for the acknowledgements still due, counts the events of those
// that did not come as dropped, and closes the connection. From then on
// Stats are final: published + dropped = matched.
func (x *Exporter) Close(timeout time.Duration) {
	x.stopOnce.Do(func() {
		deadline := time.Now().Add(timeout)
		t := time.NewTimer(timeout)
		select {
		case <-x.done:
		case <-t.C:
			x.w.Close()
			<-x.done
		}
		t.Stop()
		if x.js != nil {
			t = time.NewTimer(max(time.Until(deadline), 0))
			select {
			case <-x.js.PublishAsyncComplete():
			case <-t.C:
			}
			t.Stop()
		}
		x.w.Close()
		close(x.stopLog)
		<-x.logDone
		x.nc.Close()
		if x.js != nil {
			// Closing ends the acknowledgements; the events of those
			// still due are lost to this count. nats.go keeps their
			// timers, which would report them as timed out seconds
			// from now: CleanupPublisher forgets them (reporting each
			// through the error handler, which counts it), and
			// dropInflight counts whatever it did not report.
			x.js.CleanupPublisher()
			x.dropInflight()
		}
		// What the watcher still held when it was closed (the hub still
		// open, or the timeout over) is dropped; Backlog reports it as
		// it was at the watcher's Close.
		// In this order, a Stats meanwhile can only see matched larger,
		// as while run counts a batch.
		queued, hubDropped := x.w.Backlog()
		x.seen.Add(uint64(queued) + hubDropped)
		x.stopped.Store(true)
		x.dropped.Add(uint64(queued) + hubDropped)
		s := x.Stats()
		x.log.Info("export stopped", "published", s.GetPublished(), "dropped", s.GetDropped(), "matched", s.GetMatched())
	})
}
