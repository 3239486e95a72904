package format

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/ctl/sessions"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func sessionsTable() *sessions.Table {
	c := sessions.NewCounter(2, base)
	add := func(id []byte, op snoopv1.Op, result string) {
		c.Add(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Transaction: &snoopv1.Transaction{
			Op: op, SessionId: id, SessionIdLength: uint32(len(id)), Result: result, RequestSize: 100, RequestFrames: 1}})
	}
	bin := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8}
	add(bin, snoopv1.Op_OP_ADD, "ok")
	for range 3 {
		add(bin, snoopv1.Op_OP_GET, "hit")
	}
	add(bin, snoopv1.Op_OP_GET, "miss")
	add([]byte("dcload-1"), snoopv1.Op_OP_GET, "miss")
	add([]byte("dcload-2"), snoopv1.Op_OP_GET, "miss") // evicts dcload-1: count 2, error 1
	return c.Table(base.Add(2 * time.Second))
}

func TestWriteSessionsShowsIDsRatesAndTheBound(t *testing.T) {
	var b bytes.Buffer
	if err := WriteSessions(&b, sessionsTable(), 10); err != nil {
		t.Fatal(err)
	}
	want := `hot sessions over 2.00s: 6 GETs (3.0/s), 2 sessions counted; with 2 counters a GET count may be up to 3 high
SESSION             GET/S   GETS   HIT%   ADDS   BYTES
deadbeef01020304…   2.0     4      75.0   1      570 B
dcload-2            1.0     2      0.0    0      114 B
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	WriteSessions(&b, sessionsTable(), 1)
	if strings.Contains(b.String(), "dcload") {
		t.Errorf("n=1 wrote more than the first session:\n%s", b.String())
	}
	b.Reset()
	WriteSessions(&b, sessions.NewCounter(2, base).Table(base), 10)
	if !strings.Contains(b.String(), "(no transactions with a session id)") {
		t.Errorf("an empty table:\n%s", b.String())
	}
}

func TestSessionsJSONCarriesWholeIDsAndErrors(t *testing.T) {
	line, err := SessionsJSON(sessionsTable(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Elapsed  string `json:"elapsed"`
		Gets     uint64 `json:"gets"`
		Bound    uint64 `json:"bound"`
		Sessions []struct {
			SessionID []byte   `json:"session_id"`
			Session   string   `json:"session"`
			Gets      uint64   `json:"gets"`
			GetsError uint64   `json:"gets_error"`
			Rate      float64  `json:"gets_per_sec"`
			HitRatio  *float64 `json:"hit_ratio"`
			Adds      int64    `json:"adds"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	if got.Elapsed != "2s" || got.Gets != 6 || got.Bound != 3 || len(got.Sessions) != 2 {
		t.Fatalf("%s", line)
	}
	s0, s1 := got.Sessions[0], got.Sessions[1]
	if len(s0.SessionID) != 12 || s0.Session != "deadbeef01020304…" || s0.Gets != 4 || s0.Rate != 2 || s0.HitRatio == nil || *s0.HitRatio != 0.75 || s0.Adds != 1 {
		t.Errorf("first session: %+v", s0)
	}
	if string(s1.SessionID) != "dcload-2" || s1.Gets != 2 || s1.GetsError != 1 {
		t.Errorf("second session: %+v", s1)
	}
}
