package format

import (
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/ctl/filter"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/vocab"
)

// Time layouts of event lines: the time of day for live streams, as
// tcpdump does, and with the date for saved files, which outlive the day
// they were written.
const (
	layoutClock = "15:04:05.000000"
	layoutDate  = "2006-01-02 15:04:05.000000"
)

// shortIDBytes is how much of a session id an event line shows: enough to
// tell sessions apart by eye and to paste into --session.
const shortIDBytes = 8

// dataBytesPerLine is the width of the hex dump of captured data.
const dataBytesPerLine = 32

// ANSI colours, used only when Text.Color is set.
const (
	colReset  = "\x1b[0m"
	colDim    = "\x1b[2m"
	colRed    = "\x1b[31m"
	colGreen  = "\x1b[32m"
	colYellow = "\x1b[33m"
	colCyan   = "\x1b[36m"
)

// Text renders events as text lines.
type Text struct {
	// Location is the time zone of event times; nil means UTC.
	Location *time.Location
	// Date adds the date to event times.
	Date bool
	// Color marks results and event kinds with ANSI colours.
	Color bool
	// Data prints captured session data, in hex, under its transaction.
	Data bool
}

// AppendResponse appends the text of one stream response (an event, a
// drop notice or the end of the history), ending in a newline, to b.
func (t Text) AppendResponse(b []byte, r *snoopv1.WatchEventsResponse) []byte {
	switch {
	case r.GetEvent() != nil:
		return t.AppendEvent(b, r.GetEvent())
	case r.GetHistoryDone():
		return AppendHistoryDone(b, r.GetHistoryMissing(), r.GetHistoryBeyond())
	}
	return AppendDropped(b, r.GetDropped())
}

// HistoryDone is the line between the history a watcher asked for and the
// live events after it.
const HistoryDone = "--- end of history; live events follow ---\n"

// AppendHistoryDone appends the end-of-history line: HistoryDone, saying
// how many of the events asked for were gone (the daemon holds only its
// most recent events) when some were. Asking for more than ever happened
// is no loss, and is not called one.
func AppendHistoryDone(b []byte, missing uint32, beyond uint64) []byte {
	if missing == 0 {
		return append(b, HistoryDone...)
	}
	b = append(b, "--- end of history: "...)
	b = strconv.AppendUint(b, uint64(missing), 10)
	if missing == 1 {
		b = append(b, " event asked for was gone (snoopd keeps its most recent ones: --history)"...)
	} else {
		b = append(b, " events asked for were gone (snoopd keeps its most recent ones: --history)"...)
	}
	return append(b, "; live events follow ---\n"...)
}

// AppendDropped appends the plain notice of n events missed, ending in a
// newline. It has no colour on purpose: it must survive any pipe and be
// found by grep.
func AppendDropped(b []byte, n uint64) []byte {
	b = append(b, "dropped "...)
	b = strconv.AppendUint(b, n, 10)
	if n == 1 {
		b = append(b, " event"...)
	} else {
		b = append(b, " events"...)
	}
	return append(b, " (this watcher fell behind; the proxies were not slowed)\n"...)
}

// AppendEvent appends the text of ev, ending in a newline, to b:
//
//	TIME PROXY conn=ID uid=UID OP id=SESSION… req=N resp=N [data=N] RESULT LATENCY
//	TIME PROXY conn=ID opened client=ADDR
//	TIME PROXY conn=ID closed client=ADDR after=DUR tx=N up=N down=N: REASON
//	TIME PROXY connect-failed client=ADDR: ERROR
//	TIME PROXY refused client=ADDR: ERROR
//	TIME PROXY conn=ID protocol-error DIRECTION rule=R field=F frame=N offset=N policy=P: MESSAGE
//	TIME PROXY conn=ID capture-gap DIRECTION bytes=FIRST-LAST missing=N
//
// An event from a fleet (exported to NATS) names its daemon first:
// TIME DAEMON PROXY ...
func (t Text) AppendEvent(b []byte, ev *snoopv1.Event) []byte {
	at := EventTime(ev)
	b = t.appendTime(b, at.AsTime(), at != nil)
	b = append(b, ' ')
	if d := ev.GetDaemon(); d != "" {
		b = append(b, oneLine(d)...)
		b = append(b, ' ')
	}
	b = append(b, orDash(ev.GetProxy())...)
	if id := ev.GetConnectionId(); id != 0 {
		b = append(b, " conn="...)
		b = strconv.AppendUint(b, id, 10)
	}
	switch ev.GetKind() {
	case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
		b = t.appendTx(b, ev.GetTransaction())
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED:
		b = t.paint(append(b, ' '), "opened", colCyan)
		b = appendClient(b, ev.GetClient())
		b = append(b, '\n')
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED:
		c := ev.GetClosed()
		b = t.paint(append(b, ' '), "closed", colCyan)
		b = appendClient(b, ev.GetClient())
		b = append(b, " after="...)
		b = AppendDuration(b, c.GetDuration().AsDuration())
		b = append(b, " tx="...)
		b = strconv.AppendInt(b, c.GetTransactions(), 10)
		b = append(b, " up="...)
		b = strconv.AppendInt(b, c.GetBytesUp(), 10)
		b = append(b, " down="...)
		b = strconv.AppendInt(b, c.GetBytesDown(), 10)
		if r := c.GetReason(); r != "" {
			b = append(b, ": "...)
			b = append(b, oneLine(r)...)
		}
		b = append(b, '\n')
	case snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED:
		b = t.paint(append(b, ' '), "connect-failed", colRed)
		b = appendClient(b, ev.GetClient())
		b = appendReason(b, ev.GetError())
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED:
		b = t.paint(append(b, ' '), "refused", colRed)
		b = appendClient(b, ev.GetClient())
		b = appendReason(b, ev.GetError())
	case snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR:
		pe := ev.GetProtocolError()
		b = t.paint(append(b, ' '), "protocol-error", colRed)
		b = append(b, ' ')
		b = append(b, orDash(pe.GetDirection())...)
		b = append(b, " rule="...)
		b = append(b, orDash(pe.GetRule())...)
		if f := pe.GetField(); f != "" {
			b = append(b, " field="...)
			b = append(b, f...)
		}
		b = append(b, " frame="...)
		b = strconv.AppendInt(b, pe.GetFrame(), 10)
		b = append(b, " offset="...)
		b = strconv.AppendInt(b, pe.GetOffset(), 10)
		b = append(b, " policy="...)
		b = append(b, Policy(pe.GetPolicy())...)
		b = appendReason(b, pe.GetMessage())
	case snoopv1.EventKind_EVENT_KIND_CAPTURE_GAP:
		g := ev.GetCaptureGap()
		b = t.paint(append(b, ' '), "capture-gap", colYellow)
		b = append(b, ' ')
		b = append(b, orDash(g.GetDirection())...)
		b = append(b, " bytes="...)
		b = strconv.AppendInt(b, g.GetFirstOffset(), 10)
		b = append(b, '-')
		b = strconv.AppendInt(b, g.GetLastOffset(), 10)
		b = append(b, " missing="...)
		b = strconv.AppendInt(b, g.GetBytesMissing(), 10)
		b = append(b, '\n')
	default:
		// A kind newer than this snoopctl: say so rather than hide it.
		b = append(b, " kind="...)
		b = append(b, ev.GetKind().String()...)
		b = append(b, '\n')
	}
	return b
}

// appendTx appends the transaction part of an event line and, when asked
// for and present, the hex dump of its data.
func (t Text) appendTx(b []byte, tx *snoopv1.Transaction) []byte {
	b = append(b, " uid="...)
	b = strconv.AppendUint(b, uint64(tx.GetRequestUid()), 10)
	b = append(b, ' ')
	b = append(b, OpName(tx.GetOp())...)
	b = append(b, " id="...)
	b = AppendShortID(b, tx.GetSessionId(), tx.GetSessionIdLength())
	b = append(b, " req="...)
	b = strconv.AppendUint(b, uint64(tx.GetRequestSize()), 10)
	b = append(b, " resp="...)
	b = strconv.AppendUint(b, uint64(tx.GetResponseSize()), 10)
	if n := tx.GetDataLength(); n > 0 {
		b = append(b, " data="...)
		b = strconv.AppendUint(b, uint64(n), 10)
	}
	b = append(b, ' ')
	b = t.paint(b, orDash(tx.GetResult()), resultColor(tx.GetResult()))
	b = append(b, ' ')
	if tx.GetLatency() == nil {
		b = append(b, '-') // unanswered or orphan: there is no pair to time
	} else {
		b = AppendDuration(b, tx.GetLatency().AsDuration())
	}
	if s := tx.GetServerLatency(); s != nil && s.AsDuration() != tx.GetLatency().AsDuration() {
		// A fault held it: the client waited the latency, the server
		// took this.
		b = append(b, " server="...)
		b = AppendDuration(b, s.AsDuration())
	}
	if f := tx.GetFault(); f != "" {
		b = append(b, " fault="...)
		b = append(b, f...)
	}
	b = append(b, '\n')
	if t.Data && len(tx.GetData()) > 0 {
		b = appendHexDump(b, tx.GetData(), tx.GetDataTruncated())
	}
	return b
}

// appendHexDump appends data as indented lines of hex.
func appendHexDump(b, data []byte, truncated bool) []byte {
	b = append(b, "    data "...)
	b = strconv.AppendInt(b, int64(len(data)), 10)
	b = append(b, " bytes"...)
	if truncated {
		b = append(b, " (cut at the proxy's capture limit)"...)
	}
	b = append(b, ":\n"...)
	for off := 0; off < len(data); off += dataBytesPerLine {
		end := min(off+dataBytesPerLine, len(data))
		b = append(b, "    "...)
		b = hex.AppendEncode(b, data[off:end])
		b = append(b, '\n')
	}
	return b
}

// appendTime appends ts in t's zone and layout, or "-" when the event has
// no time.
func (t Text) appendTime(b []byte, ts time.Time, ok bool) []byte {
	if !ok {
		return append(b, '-')
	}
	loc := t.Location
	if loc == nil {
		loc = time.UTC
	}
	layout := layoutClock
	if t.Date {
		layout = layoutDate
	}
	ts = ts.In(loc)
	b = ts.AppendFormat(b, layout)
	if loc == time.UTC {
		b = append(b, 'Z')
	}
	return b
}

// paint appends s, in colour c when colour is on.
func (t Text) paint(b []byte, s, c string) []byte {
	if !t.Color || c == "" {
		return append(b, s...)
	}
	b = append(b, c...)
	b = append(b, s...)
	return append(b, colReset...)
}

// resultColor is green for answers that went well, yellow for normal
// negative answers and red for errors.
func resultColor(r string) string {
	res, ok := vocab.ParseResult(r)
	switch {
	case !ok:
		return colRed
	case res.Class() == vocab.Good:
		return colGreen
	case res.Class() == vocab.Normal:
		return colYellow
	}
	return colRed
}

func appendClient(b []byte, client string) []byte {
	if client == "" {
		return b
	}
	b = append(b, " client="...)
	return append(b, client...)
}

func appendReason(b []byte, reason string) []byte {
	if reason != "" {
		b = append(b, ": "...)
		b = append(b, oneLine(reason)...)
	}
	return append(b, '\n')
}

// oneLine keeps a message from the daemon on its line, so that one event
// is always one line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ShortID renders a session id for an event line so that different ids
// look different, in a form --session reads back (filter.ParseSessionPrefix):
// a printable id as text, elided in the middle when long ("dcload-8a3f…0042",
// or with only "…" at the end when the event has only its start); any
// other id as the hex of its first 8 bytes, followed by "…" when the id is
// longer. fullLen is the id's full length when the event carries only
// part of it (0 means len(id)).
func ShortID(id []byte, fullLen uint32) string {
	return string(AppendShortID(nil, id, fullLen))
}

// A long text id shows its first textIDHead and last textIDTail
// characters: the start for --session, the end where per-session counters
// and sequence numbers usually are.
const (
	textIDHead = 14
	textIDTail = 8
)

// AppendShortID appends ShortID(id, fullLen) to b.
func AppendShortID(b, id []byte, fullLen uint32) []byte {
	if len(id) == 0 {
		return append(b, '-')
	}
	if filter.TextForm(id) {
		whole := int(fullLen) <= len(id)
		switch {
		case len(id) <= textIDHead+textIDTail+1 && whole:
			return append(b, id...)
		case !whole:
			b = append(b, id[:min(len(id), textIDHead+textIDTail)]...)
			return append(b, "…"...)
		}
		b = append(b, id[:textIDHead]...)
		b = append(b, "…"...)
		return append(b, id[len(id)-textIDTail:]...)
	}
	n := min(len(id), shortIDBytes)
	b = hex.AppendEncode(b, id[:n])
	if len(id) > n || int(fullLen) > n {
		b = append(b, "…"...)
	}
	return b
}

// OpName is an operation's name as the protocol spells it: ADD, GET,
// REMOVE, HAVE.
func OpName(op snoopv1.Op) string {
	if o, ok := apiconv.OpFromAPI(op); ok {
		return opUpper[o]
	}
	return "OP(" + strconv.Itoa(int(op)) + ")"
}

// opUpper are the vocabulary's operation names as output shows them.
var opUpper = func() (out [distcache.NumOps]string) {
	for i := range out {
		out[i] = strings.ToUpper(vocab.OpName(distcache.Op(i)))
	}
	return out
}()

// Policy names a corrupt-input policy as --on-corrupt spells it.
func Policy(p snoopv1.CorruptPolicy) string {
	switch p {
	case snoopv1.CorruptPolicy_CORRUPT_POLICY_UNSPECIFIED, snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE:
		return "close"
	case snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH:
		return "passthrough"
	case snoopv1.CorruptPolicy_CORRUPT_POLICY_RESYNC:
		return "resync"
	}
	return p.String()
}

// Duration renders d with three significant digits ("250µs", "1.23ms",
// "12.3s"), short enough for event lines and tables.
func Duration(d time.Duration) string {
	return string(AppendDuration(nil, d))
}

// durationUnits are the units of Duration, largest first.
var durationUnits = [...]struct {
	unit time.Duration
	name string
}{{time.Second, "s"}, {time.Millisecond, "ms"}, {time.Microsecond, "µs"}}

// AppendDuration appends Duration(d) to b.
func AppendDuration(b []byte, d time.Duration) []byte {
	if d < 0 {
		if d == math.MinInt64 { // has no positive counterpart
			return append(b, d.String()...)
		}
		return AppendDuration(append(b, '-'), -d)
	}
	if d >= 1000*time.Second {
		return append(b, d.Round(time.Second).String()...)
	}
	for _, u := range durationUnits {
		if d >= u.unit {
			v := float64(d) / float64(u.unit)
			prec := 0
			switch {
			case v < 10:
				prec = 2
			case v < 100:
				prec = 1
			}
			b = strconv.AppendFloat(b, v, 'f', prec, 64)
			return append(b, u.name...)
		}
	}
	b = strconv.AppendInt(b, int64(d), 10)
	return append(b, "ns"...)
}

// Bytes renders a byte count in IEC units ("512 B", "1.5 KiB").
func Bytes(n int64) string {
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		if v < 1024 && v > -1024 || u == "TiB" {
			return strconv.FormatFloat(v, 'f', 1, 64) + " " + u
		}
	}
	return strconv.FormatInt(n, 10) + " B"
}

// EventTime is the time an event is shown and ordered by: when it was
// emitted (end_time; a transaction's end), or for events from daemons
// that predate end_time, its time.
func EventTime(ev *snoopv1.Event) *timestamppb.Timestamp {
	if t := ev.GetEndTime(); t != nil {
		return t
	}
	return ev.GetTime()
}
