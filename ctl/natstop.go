package ctl

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/sessions"
	"github.com/snoopd/snoopd/ctl/top"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// natsTop is top's Source for a fleet: one subscription to the events
// the daemons export to NATS, counted as the daemons would count them
// (top.EventCounter), so that top's frames, which subtract snapshots,
// work on it as on a daemon's counters.
type natsTop struct {
	src     *natsSource
	counter *top.EventCounter
	// sessions counts the same events per session id for the sessions
	// view: one subscription serves both.
	sessions *sessions.Counter
	cancel   context.CancelFunc
	done     chan struct{}

	mu    sync.Mutex
	err   error          // why the stream ended, if it did
	lost  int            // how often the connection broke
	warns []string       // the stream's other warnings, each once, in order
	times map[string]int // how often each came
}

var (
	_ top.Source        = (*natsTop)(nil)
	_ top.SessionSource = (*natsTop)(nil)
)

// openNATSTop connects to rawURL and starts counting the events req's
// filters keep; Close stops it.
func (e *env) openNATSTop(cCtx *cli.Context, rawURL string, req *snoopv1.WatchEventsRequest) (*natsTop, error) {
	s, err := e.openNATS(cCtx, rawURL, req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(cCtx.Context)
	now := time.Now()
	t := &natsTop{src: s, counter: top.NewEventCounter(now), sessions: sessions.NewCounter(sessions.DefaultCounters, now), cancel: cancel,
		done: make(chan struct{}), times: map[string]int{}}
	// The live view owns the terminal: warnings go into the frames'
	// notes, not to stderr.
	s.warn, s.onLost = t.warned, t.connLost
	go t.run(ctx)
	return t, nil
}

func (t *natsTop) run(ctx context.Context) {
	defer close(t.done)
	_, err := t.src.stream(ctx, streamOptions{action: "subscription"}, func(r *snoopv1.WatchEventsResponse) error {
		if ev := r.GetEvent(); ev != nil {
			t.counter.Add(ev)
			t.sessions.Add(ev)
		} else {
			t.counter.Dropped(r.GetDropped())
			t.sessions.Dropped(r.GetDropped())
		}
		return nil
	})
	if err != nil {
		t.mu.Lock()
		t.err = err
		t.mu.Unlock()
	}
}

// connLost counts a broken connection: the events published meanwhile
// are missing, closes perhaps among them.
func (t *natsTop) connLost() {
	t.counter.Dropped(0)
	t.mu.Lock()
	t.lost++
	t.mu.Unlock()
}

func (t *natsTop) warned(format string, args ...any) {
	w := fmt.Sprintf(format, args...)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.times[w] == 0 {
		t.warns = append(t.warns, w)
	}
	t.times[w]++
}

// Snapshot implements top.Source: the counts so far, with the
// connection's state and the stream's warnings as notes. A stream that
// ended (a subscription NATS refused) ends top with its error.
func (t *natsTop) Snapshot(ctx context.Context) (*top.Snapshot, error) {
	t.mu.Lock()
	err, lost, warns := t.err, t.lost, slices.Clone(t.warns)
	for i, w := range warns {
		if n := t.times[w]; n > 1 {
			warns[i] = fmt.Sprintf("%s (%d times)", w, n)
		}
	}
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s := t.counter.Snapshot(time.Now())
	s.Source = t.src.url
	switch {
	case !t.src.nc.IsConnected():
		s.Notes = append(s.Notes, fmt.Sprintf("disconnected from NATS at %s: reconnecting; events published meanwhile are missing", t.src.url))
	case lost == 1:
		s.Notes = append(s.Notes, "the connection to NATS broke once: events published meanwhile are missing ('snoopctl read' replays them)")
	case lost > 1:
		s.Notes = append(s.Notes, fmt.Sprintf("the connection to NATS broke %d times: events published meanwhile are missing ('snoopctl read' replays them)", lost))
	}
	s.Notes = append(s.Notes, warns...)
	return s, nil
}

// Sessions implements top.SessionSource: the sessions counted since the
// previous call, or since the subscription began.
func (t *natsTop) Sessions(context.Context) (*sessions.Table, error) {
	t.mu.Lock()
	err := t.err
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return t.sessions.Take(time.Now()), nil
}

// Close stops the subscription and closes the connection.
func (t *natsTop) Close() {
	t.cancel()
	<-t.done
	t.src.Close()
}
