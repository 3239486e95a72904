package format

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/snoopd/snoopd/ctl/sessions"
)

// WriteSessions writes the hot sessions table (snoopctl stats --by
// session, top's sessions view in batch mode): a line saying what was
// counted and how exact the counts are, then the first n sessions by
// GETs, each id as tail shows it (ShortID: text, or hex of its first
// bytes), with its GET rate over the table's span.
func WriteSessions(w io.Writer, t *sessions.Table, n int) error {
	fmt.Fprintln(w, SessionsSummary(t))
	tw := newTable(w)
	fmt.Fprintln(tw, "SESSION\tGET/S\tGETS\tHIT%\tADDS\tBYTES")
	for _, r := range t.Top(n) {
		fmt.Fprintln(tw, SessionLine(t, r))
	}
	if len(t.Rows) == 0 {
		fmt.Fprintln(tw, "(no transactions with a session id)")
	}
	return tw.Flush()
}

// SessionLine is one session's row of WriteSessions' table, its cells
// separated by tabs.
func SessionLine(t *sessions.Table, r sessions.Row) string {
	hit := "-"
	if h, ok := r.HitRatio(); ok {
		hit = strconv.FormatFloat(100*h, 'f', 1, 64)
	}
	return fmt.Sprintf("%s\t%.1f\t%d\t%s\t%d\t%s", ShortID(r.ID, r.IDLen), t.Rate(r.Gets), r.Gets, hit, r.Adds, Bytes(r.Bytes))
}

// SessionsSummary is the line above the sessions table: the span, the
// GETs counted, and the sketch's bound on the counts.
func SessionsSummary(t *sessions.Table) string {
	s := fmt.Sprintf("hot sessions over %s: %d GETs (%.1f/s), %d sessions counted", Duration(t.Span().Round(time.Millisecond)),
		t.Gets, t.Rate(t.Gets), len(t.Rows))
	if t.Bound > 0 {
		s += fmt.Sprintf("; with %d counters a GET count may be up to %d high", t.Counters, t.Bound)
	}
	if t.Dropped > 0 {
		s += fmt.Sprintf("; %d events dropped are not counted", t.Dropped)
	}
	return s
}

// sessionsJSON is snoopctl stats --by session -o json, and top's
// sessions in JSON: one object per table.
type sessionsJSON struct {
	Time     string           `json:"time"`
	Elapsed  JSONDuration     `json:"elapsed"`
	Gets     uint64           `json:"gets"`
	Counters int              `json:"counters"`
	Bound    uint64           `json:"bound"`
	Dropped  uint64           `json:"dropped"`
	Sessions []sessionJSONRow `json:"sessions"`
}

type sessionJSONRow struct {
	// SessionID is the id as the events carry it, base64 as -o json
	// writes an event's session_id (and --session reads it back).
	SessionID []byte   `json:"session_id"`
	Session   string   `json:"session"`
	Gets      uint64   `json:"gets"`
	GetsError uint64   `json:"gets_error"`
	GetRate   float64  `json:"gets_per_sec"`
	Hits      int64    `json:"hits"`
	Misses    int64    `json:"misses"`
	HitRatio  *float64 `json:"hit_ratio,omitempty"`
	Adds      int64    `json:"adds"`
	Bytes     int64    `json:"bytes"`
}

// SessionsJSON returns the first n sessions of t as one line of JSON:
//
//	{"time":..., "elapsed":"2s", "gets":N, "counters":M, "bound":N/M,
//	 "dropped":N, "sessions":[{"session_id":<base64>, "session":<as tail
//	 shows it>, "gets":N, "gets_error":N, "gets_per_sec":R, "hits":N,
//	 "misses":N, "hit_ratio":0.9, "adds":N, "bytes":N}]}
func SessionsJSON(t *sessions.Table, n int) ([]byte, error) {
	out := sessionsJSON{Time: t.At.UTC().Format(time.RFC3339Nano), Elapsed: JSONDuration(t.Span()),
		Gets: t.Gets, Counters: t.Counters, Bound: t.Bound, Dropped: t.Dropped, Sessions: []sessionJSONRow{}}
	for _, r := range t.Top(n) {
		row := sessionJSONRow{SessionID: r.ID, Session: ShortID(r.ID, r.IDLen), Gets: r.Gets, GetsError: r.GetsError,
			GetRate: t.Rate(r.Gets), Hits: r.Hits, Misses: r.Misses, Adds: r.Adds, Bytes: r.Bytes}
		if h, ok := r.HitRatio(); ok {
			row.HitRatio = &h
		}
		out.Sessions = append(out.Sessions, row)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode sessions: %w", err)
	}
	return b, nil
}
