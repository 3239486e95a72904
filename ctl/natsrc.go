package ctl

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/ctl/filter"
	"github.com/snoopd/snoopd/daemon/export"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/vocab"
)

// natsQueue bounds the messages received ahead of the handler. Beyond it
// nats.go drops them for this subscriber (a slow consumer), and tail says
// how many, as a daemon's drop notice would.
const natsQueue = 8192

// natsDropCheck is how often a NATS stream looks for dropped messages.
const natsDropCheck = 250 * time.Millisecond

// natsFlags are the flags of the commands that read from NATS (tail, save
// and stats with --from, read with a nats:// argument).
func natsFlags(withFrom bool) []cli.Flag {
	var fs []cli.Flag
	if withFrom {
		fs = append(fs, &cli.StringFlag{Name: "from", Usage: "read the events a fleet of snoopd exports to NATS at `URL` (nats://host:port) instead of from one daemon"})
	}
	return append(fs,
		&cli.StringSliceFlag{Name: "daemon", Usage: "from NATS: keep events of these `DAEMONS` (their --daemon-name)"},
		&cli.StringFlag{Name: "subject", Value: export.DefaultSubject, Usage: "from NATS: the subject `PREFIX` the daemons export under (their --export-subject; a token may be '*')"},
		&cli.StringFlag{Name: "nats-creds", Usage: "from NATS: authenticate with the credentials `FILE`"},
		&cli.StringFlag{Name: "nats-token-file", Usage: "from NATS: authenticate with the token in `FILE`"},
		&cli.StringFlag{Name: "nats-tls-ca", Usage: "from NATS: trust the servers' certificates signed by a CA in PEM `FILE`"},
	)
}

// isNATSURL reports whether s names a NATS server rather than a file.
func isNATSURL(s string) bool {
	for _, p := range []string{"nats://", "tls://", "ws://", "wss://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// natsSource is a connection to NATS and what to take from it: the
// subjects that carry the events the filter can match (NATS filters by
// daemon, proxy, kind and operation), and the shared matcher for the rest.
type natsSource struct {
	e        *env
	url      string
	nc       *nats.Conn
	patterns []string
	m        *match.Matcher
	daemons  []string

	// warn, when set, takes the stream's warnings instead of stderr (top's
	// live view owns the terminal and shows them itself).
	warn func(format string, args ...any)
	// onLost, when set, is told of a broken connection instead of a
	// warning (top counts them, and forgets what it cannot trust).
	onLost func()

	mu       sync.Mutex
	lostConn bool // the connection dropped since the last look
}

// warnf reports a problem that does not end the stream.
func (s *natsSource) warnf(format string, args ...any) {
	if s.warn != nil {
		s.warn(format, args...)
		return
	}
	s.e.warnf(format, args...)
}

// openNATS connects to url for the filter in req.
func (e *env) openNATS(cCtx *cli.Context, rawURL string, req *snoopv1.WatchEventsRequest) (*natsSource, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || !isNATSURL(rawURL) {
		return nil, usagef("%q is not a NATS URL (want nats://HOST:PORT, e.g. nats://127.0.0.1:4222)", rawURL)
	}
	prefix := cCtx.String("subject")
	if !validSubscribePrefix(prefix) {
		return nil, usagef("--subject %q: want dot-separated tokens without spaces or '>', a whole token may be '*' (snoop, snoop.g07, 'snoop.*')", prefix)
	}
	m, err := filter.Compile(req)
	if err != nil {
		return nil, usagef("%v", err)
	}
	s := &natsSource{e: e, url: rawURL, m: m, daemons: filter.SplitList(cCtx.StringSlice("daemon"))}
	s.patterns = subjectPatterns(prefix, s.daemons, req)
	opts := []nats.Option{
		nats.Name("snoopctl"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			s.mu.Lock()
			s.lostConn = true
			s.mu.Unlock()
		}),
	}
	if f := cCtx.String("nats-creds"); f != "" {
		opts = append(opts, nats.UserCredentials(f))
	}
	if f := cCtx.String("nats-token-file"); f != "" {
		tok, err := readToken(f)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(tok))
	}
	if f := cCtx.String("nats-tls-ca"); f != "" {
		opts = append(opts, nats.RootCAs(f))
	}
	nc, err := nats.Connect(rawURL, opts...)
	if err != nil {
		return nil, failf("cannot reach NATS at %s: %v", rawURL, err)
	}
	s.nc = nc
	return s, nil
}

// Close closes the connection.
func (s *natsSource) Close() { s.nc.Close() }

// subjectPatterns are the subjects that carry what req can match: the
// product of the daemons, proxies, and kinds or operations it names (a
// wildcard where it names none). They never overlap, so no event comes
// twice.
func subjectPatterns(prefix string, daemons []string, req *snoopv1.WatchEventsRequest) []string {
	ds := daemons
	if len(ds) == 0 {
		ds = []string{""}
	}
	ps := req.GetProxies()
	if len(ps) == 0 {
		ps = []string{""}
	}
	var tails [][2]string // kind, op
	switch {
	case len(req.GetOps()) > 0:
		for _, op := range req.GetOps() {
			if o, ok := apiconv.OpFromAPI(op); ok {
				tails = append(tails, [2]string{vocab.KindTransaction.Short(), vocab.OpName(o)})
			}
		}
	case len(req.GetKinds()) > 0:
		for _, k := range req.GetKinds() {
			if vk, ok := apiconv.KindFromAPI(k); ok {
				tails = append(tails, [2]string{vk.Short(), ""})
			}
		}
	default:
		tails = [][2]string{{"", ""}}
	}
	var out []string
	for _, d := range ds {
		for _, p := range ps {
			for _, t := range tails {
				s := export.Filter(prefix, d, p, t[0], t[1])
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// validSubscribePrefix checks --subject: the daemons' --export-subject, in
// which a whole token may be '*' to follow several groups at once.
func validSubscribePrefix(p string) bool {
	toks := strings.Split(p, ".")
	for i, t := range toks {
		if t == "*" {
			toks[i] = "x"
		}
	}
	return export.ValidPrefix(strings.Join(toks, "."))
}

// decodeEvents reads an exported message by its Content-Type: one
// snoop.v1.Event, or a batch of them (a snoop.v1.WatchEventsResponse, from
// snoopd --export-batch).
func decodeEvents(data []byte, contentType string) ([]*snoopv1.Event, error) {
	json := strings.HasPrefix(contentType, export.ContentTypeJSON)
	if strings.Contains(contentType, "proto=snoop.v1.WatchEventsResponse") {
		batch := &snoopv1.WatchEventsResponse{}
		var err error
		if json {
			err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, batch)
		} else {
			err = proto.Unmarshal(data, batch)
		}
		return batch.GetEvents(), err
	}
	ev := &snoopv1.Event{}
	var err error
	if json {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, ev)
	} else {
		err = proto.Unmarshal(data, ev)
	}
	return []*snoopv1.Event{ev}, err
}

// keep applies what the subjects could not: the shared matcher, with the
// event's daemon, and the daemon names exactly (subjects carry them
// sanitised).
func (s *natsSource) keep(ev *snoopv1.Event) bool {
	if len(s.daemons) > 0 && !slices.Contains(s.daemons, ev.GetDaemon()) {
		return false
	}
	var v match.View
	apiconv.View(ev, ev.GetDaemon(), &v)
	return s.m.Match(&v)
}

// stream follows the live events on NATS with the same contract as
// env.stream: handle sees every event and drop notice, until ctx ends,
// o.count events or o.dur passed.
func (s *natsSource) stream(ctx context.Context, o streamOptions, handle func(*snoopv1.WatchEventsResponse) error) (streamResult, error) {
	start := time.Now()
	var res streamResult
	ch := make(chan *nats.Msg, natsQueue)
	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			sub.Unsubscribe()
		}
	}()
	for _, p := range s.patterns {
		sub, err := s.nc.ChanSubscribe(p, ch)
		if err != nil {
			return res, failf("%s: subscribe to %s on %s: %v", o.action, p, s.url, err)
		}
		subs = append(subs, sub)
	}
	// The subscriptions are in place on the server before anything is
	// said to be followed.
	if err := s.nc.FlushTimeout(10 * time.Second); err != nil {
		return res, failf("%s: NATS at %s: %v", o.action, s.url, err)
	}
	var stop <-chan time.Time
	if o.dur > 0 {
		t := time.NewTimer(o.dur)
		defer t.Stop()
		stop = t.C
	}
	var tick <-chan time.Time
	if o.tick > 0 && o.onTick != nil {
		t := time.NewTicker(o.tick)
		defer t.Stop()
		tick = t.C
	}
	check := time.NewTicker(natsDropCheck)
	defer check.Stop()
	flush := func() error {
		if o.flush == nil {
			return nil
		}
		return o.flush()
	}
	var dropped uint64
	badWarned := false
	var one snoopv1.WatchEventsResponse
	for {
		select {
		case <-ctx.Done():
			res.elapsed = time.Since(start)
			return res, flush()
		case <-stop:
			res.elapsed = time.Since(start)
			return res, flush()
		case <-tick:
			o.onTick()
		case <-check.C:
			var n uint64
			for _, sub := range subs {
				if d, err := sub.Dropped(); err == nil {
					n += uint64(d)
				}
			}
			if n > dropped {
				res.dropped += n - dropped
				if err := handle(&snoopv1.WatchEventsResponse{Dropped: n - dropped}); err != nil {
					return res, err
				}
				dropped = n
			}
			s.mu.Lock()
			lost := s.lostConn
			s.lostConn = false
			s.mu.Unlock()
			if lost && s.onLost != nil {
				s.onLost()
			} else if lost {
				s.warnf("the connection to NATS at %s broke; reconnecting (events published meanwhile are not shown here; 'snoopctl read' replays them)", s.url)
			}
			if err := flush(); err != nil {
				return res, err
			}
		case m := <-ch:
			evs, err := decodeEvents(m.Data, m.Header.Get(export.HeaderContentType))
			if err != nil {
				if !badWarned {
					s.warnf("skipping a message on %s that is not a snoop.v1.Event: %v", m.Subject, err)
					badWarned = true
				}
				continue
			}
			for _, ev := range evs {
				if !s.keep(ev) {
					continue
				}
				res.events++
				one.Event = ev
				if err := handle(&one); err != nil {
					return res, err
				}
				if o.count > 0 && res.events >= o.count {
					res.elapsed = time.Since(start)
					return res, flush()
				}
			}
			if len(ch) == 0 {
				if err := flush(); err != nil {
					return res, err
				}
			}
		}
	}
}

// replay reads the events kept in JetStream stream from since (zero: the
// start) until until (zero: what the stream holds now), in order.
func (s *natsSource) replay(ctx context.Context, stream string, since, until time.Time, handle func(*snoopv1.WatchEventsResponse) (bool, error)) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return failf("read %s: %v", s.url, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: s.patterns, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := js.OrderedConsumer(cctx, stream, cfg)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return failf("read %s: no stream %q (is a snoopd exporting with --export-stream %s?)", s.url, stream, stream)
	case err != nil:
		return failf("read %s: stream %s: %v", s.url, stream, err)
	}
	if cons.CachedInfo().NumPending == 0 {
		return nil
	}
	var one snoopv1.WatchEventsResponse
	// round fetches and handles one batch; it reports whether the replay
	// is done.
	round := func() (bool, error) {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		batch, err := cons.Fetch(256, jetstream.FetchContext(fctx))
		if err != nil {
			if ctx.Err() != nil {
				return true, nil
			}
			return true, failf("read %s: %v", s.url, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return true, failf("read %s: %v", s.url, err)
			}
			if !until.IsZero() && md.Timestamp.After(until) {
				return true, nil
			}
			evs, err := decodeEvents(m.Data(), m.Headers().Get(export.HeaderContentType))
			for _, ev := range evs {
				if err != nil || !s.keep(ev) {
					continue
				}
				one.Event = ev
				if done, err := handle(&one); err != nil || done {
					return true, err
				}
			}
			if md.NumPending == 0 {
				return true, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return true, failf("read %s: %v", s.url, err)
		}
		return got == 0 || ctx.Err() != nil, nil
	}
	// Every round reads messages of a stream that was finite when the
	// consumer was made (it stops at the last one pending then), or ends.
	for {
		done, err := round()
		if done || err != nil {
			return err
		}
	}
}

// qualifyProxy names an event's proxy with its daemon (web-7/sessions),
// so that views keyed by proxy keep a fleet's proxies apart. The event is
// the handler's to change: sources never reuse what they hand out.
func qualifyProxy(r *snoopv1.WatchEventsResponse) {
	if ev := r.GetEvent(); ev != nil && ev.GetDaemon() != "" {
		ev.Proxy = fmt.Sprintf("%s/%s", ev.GetDaemon(), ev.GetProxy())
	}
}
