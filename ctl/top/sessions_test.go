package top

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/snoopd/snoopd/ctl/sessions"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

type fixedSource struct{}

func (fixedSource) Snapshot(context.Context) (*Snapshot, error) {
	return &Snapshot{At: time.Now(), Source: "d"}, nil
}

// fakeSessions hands out a table it counted from n sessions, or err.
type fakeSessions struct {
	n     int
	err   error
	calls int
}

func (f *fakeSessions) Sessions(context.Context) (*sessions.Table, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	c := sessions.NewCounter(100, t0)
	for i := range f.n {
		for range f.n - i { // session i has n-i GETs: s00 the busiest
			c.Add(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Transaction: &snoopv1.Transaction{
				Op: snoopv1.Op_OP_GET, SessionId: fmt.Appendf(nil, "s%02d", i), Result: "hit"}})
		}
	}
	return c.Take(t0.Add(time.Second)), nil
}

// refresh runs one poll through the model, as the program would.
func refresh(m *model) { m.Update(m.poll()()) }

func press(m *model, key string) { m.Update(tea.KeyPressMsg{Code: rune(key[0]), Text: key}) }

func TestSessionsViewShowsTheBusiestThatFit(t *testing.T) {
	f := &fakeSessions{n: 50}
	m := &model{src: fixedSource{}, sessSrc: f, delay: time.Second, sortCol: defaultSort, desc: true, width: 100, height: 20}
	refresh(m)
	if f.calls != 0 {
		t.Fatalf("the proxies' view asked for sessions %d times", f.calls)
	}
	if scr := m.render(); !strings.Contains(scr, "NAME") || !strings.Contains(scr, "s sessions") {
		t.Fatalf("the proxies' view:\n%s", scr)
	}
	press(m, "s")
	if scr := m.render(); !strings.Contains(scr, "hot sessions: counting") {
		t.Fatalf("before its first refresh the view says it is counting:\n%s", scr)
	}
	refresh(m)
	scr := m.render()
	lines := strings.Split(scr, "\n")
	if f.calls != 1 || len(lines) != 20 || !strings.Contains(scr, "hot sessions over 1.00s: 1275 GETs") ||
		!strings.Contains(scr, "SESSION") || !strings.HasPrefix(lines[5], "s00 ") || !strings.Contains(scr, "s (esc) proxies") {
		t.Fatalf("the sessions view (%d lines, %d polls):\n%s", len(lines), f.calls, scr)
	}
	if strings.Contains(scr, "s49") {
		t.Errorf("the quietest session shows on a 20-line screen:\n%s", scr)
	}

	f.err = errors.New("watch refused")
	refresh(m)
	if scr := m.render(); !strings.Contains(scr, "sessions: watch refused") {
		t.Errorf("a failed count is shown in the view:\n%s", scr)
	}
	press(m, "s")
	if scr := m.render(); !strings.Contains(scr, "NAME") || strings.Contains(scr, "SESSION") {
		t.Errorf("s again goes back to the proxies:\n%s", scr)
	}
}

func TestSessionsKeyWithoutASourceSortsNothing(t *testing.T) {
	m := &model{src: fixedSource{}, delay: time.Second, sortCol: defaultSort, desc: true, width: 100, height: 20}
	refresh(m)
	press(m, "s")
	if scr := m.render(); !strings.Contains(scr, "NAME") || strings.Contains(scr, "sessions") || m.sortCol != defaultSort {
		t.Errorf("s without sessions changed the view or the sort:\n%s", scr)
	}
	press(m, "t")
	if columns[m.sortCol].title != "STATE" {
		t.Errorf("t sorts by %s, want STATE", columns[m.sortCol].title)
	}
}
