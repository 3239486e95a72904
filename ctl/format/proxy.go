package format

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/snoopd/snoopd/ctl/stats"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/labels"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/vocab"
)

// newTable returns a tabwriter laid out like ctr's tables: columns
// separated by at least three spaces, left-aligned.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
}

// State names a proxy state in one lower-case word.
func State(s snoopv1.ProxyState) string {
	switch s {
	case snoopv1.ProxyState_PROXY_STATE_LISTENING:
		return "listening"
	case snoopv1.ProxyState_PROXY_STATE_DISABLED:
		return "disabled"
	case snoopv1.ProxyState_PROXY_STATE_FAILED:
		return "failed"
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "PROXY_STATE_"))
}

// ProxyErrors counts what snoopctl calls errors in a proxy's counters:
// protocol errors, failed connects to the server, refused clients and
// transactions whose result is an error (vocab.Result.IsError), the same
// definition tail --errors uses.
func ProxyErrors(c *snoopv1.ProxyCounters) int64 {
	return c.GetProtocolErrors() + c.GetConnectFailures() + c.GetConnectionsRefused() + TxErrors(c)
}

// TxErrors counts the transactions whose result is an error.
func TxErrors(c *snoopv1.ProxyCounters) int64 {
	var n int64
	for _, oc := range c.GetOps() {
		for r, k := range oc.GetResults() {
			if res, ok := vocab.ParseResult(r); !ok || res.IsError() {
				n += k
			}
		}
	}
	return n
}

// WriteProxyList writes the table of snoopctl list, then one line for
// each failed proxy saying why it failed.
func WriteProxyList(w io.Writer, proxies []*snoopv1.Proxy) error {
	tw := newTable(w)
	// The LABELS column only when some proxy has labels, so that the
	// table of a daemon without any stays as it was.
	withLabels := slices.ContainsFunc(proxies, func(p *snoopv1.Proxy) bool { return len(p.GetSpec().GetLabels()) > 0 })
	// KIND and MISSED likewise only when there is a tap.
	withTaps := slices.ContainsFunc(proxies, IsTap)
	header := "NAME\tLISTEN\tSERVER\tSTATE\tCONNS\tTRANSACTIONS\tERRORS"
	if withTaps {
		header = "NAME\tKIND\tLISTEN\tSERVER\tSTATE\tCONNS\tTRANSACTIONS\tERRORS\tMISSED"
	}
	if withLabels {
		header += "\tLABELS"
	}
	fmt.Fprintln(tw, header)
	for _, p := range proxies {
		c := p.GetCounters()
		if withTaps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s", p.GetSpec().GetName(), Kind(p), listenOf(p), p.GetSpec().GetServer(),
				ProxyState(p), c.GetConnectionsActive(), c.GetTransactions(), ProxyErrors(c), missed(c.GetTap()))
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d", p.GetSpec().GetName(), listenOf(p), p.GetSpec().GetServer(),
				State(p.GetState()), c.GetConnectionsActive(), c.GetTransactions(), ProxyErrors(c))
		}
		if withLabels {
			fmt.Fprintf(tw, "\t%s", orDash(labels.String(p.GetSpec().GetLabels())))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range proxies {
		if p.GetState() == snoopv1.ProxyState_PROXY_STATE_FAILED {
			if _, err := fmt.Fprintf(w, "%s failed: %s\n", p.GetSpec().GetName(), orDash(oneLine(p.GetError()))); err != nil {
				return err
			}
		}
	}
	return nil
}

// IsTap reports whether p is a tap (it captures beside the traffic)
// rather than a proxy in its path.
func IsTap(p *snoopv1.Proxy) bool {
	return p.GetKind() == snoopv1.ProxyKind_PROXY_KIND_TAP || p.GetSpec().GetTapInterface() != ""
}

// Kind names p's kind: "proxy", or "tap" and the interface it captures.
func Kind(p *snoopv1.Proxy) string {
	if IsTap(p) {
		return "tap " + p.GetSpec().GetTapInterface()
	}
	return "proxy"
}

// ProxyState is State, but a tap's listening is capturing.
func ProxyState(p *snoopv1.Proxy) string {
	if IsTap(p) && p.GetState() == snoopv1.ProxyState_PROXY_STATE_LISTENING {
		return "capturing"
	}
	return State(p.GetState())
}

// missed is list's MISSED of a tap: packets the kernel dropped and
// bytes the capture missed; "-" for a proxy.
func missed(t *snoopv1.TapCounters) string {
	if t == nil {
		return "-"
	}
	if t.GetKernelDrops() == 0 && t.GetCaptureMissingBytes() == 0 {
		return "0"
	}
	return fmt.Sprintf("%d pkts, %s", t.GetKernelDrops(), Bytes(t.GetCaptureMissingBytes()))
}

// conditionText explains a proxy condition the API names; one it does not
// know is shown as named.
func conditionText(cond string) string {
	switch cond {
	case proxy.ConditionForwardingLoop:
		return cond + ": requests came back unanswered as new clients, around a loop through another daemon (is the server a proxy that leads back here?); they are closed"
	}
	return cond
}

// listenOf is the address a proxy really listens on, or its declared one
// while it does not listen.
func listenOf(p *snoopv1.Proxy) string {
	if a := p.GetListenAddress(); a != "" {
		return a
	}
	return orDash(p.GetSpec().GetListen())
}

// WriteProxy writes snoopctl show: the spec, the counters, latency
// percentiles, per-operation sparklines and the latency histogram as bars
// (when p carries histograms), and the live connections. now dates the
// connections.
// EffectiveFaults are p's faults as they run, with their defaults (a
// direction, a probability) filled in; the spec's as declared from a
// daemon that does not say.
func EffectiveFaults(p *snoopv1.Proxy) []*snoopv1.Fault {
	if es := p.GetEffectiveSpec(); es != nil {
		return es.GetFaults()
	}
	return p.GetSpec().GetFaults()
}

func WriteProxy(w io.Writer, p *snoopv1.Proxy, conns []*snoopv1.Connection, now time.Time, loc *time.Location) error {
	s, c := p.GetSpec(), p.GetCounters()
	tw := newTable(w)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, k+":\t"+format+"\n", args...) }
	row("name", "%s", s.GetName())
	if IsTap(p) {
		row("kind", "tap on %s: captures the server's traffic, forwards nothing", s.GetTapInterface())
	}
	state := ProxyState(p)
	if p.GetState() == snoopv1.ProxyState_PROXY_STATE_FAILED {
		state += ": " + oneLine(p.GetError())
	}
	row("state", "%s", state)
	for _, cond := range p.GetConditions() {
		row("condition", "%s", conditionText(cond))
	}
	if IsTap(p) {
		return writeTap(w, tw, row, p, now, loc)
	}
	listen := listenOf(p)
	if s.GetListen() != "" && s.GetListen() != listen {
		listen += " (declared " + s.GetListen() + ")"
	}
	row("listen", "%s", listen)
	row("server", "%s", orDash(s.GetServer()))
	if l := s.GetLabels(); len(l) > 0 {
		row("labels", "%s", labels.String(l))
	}
	if chain := p.GetChain(); len(chain) > 0 {
		// The server is another proxy of the daemon: where the traffic
		// really goes.
		if end := p.GetChainServer(); end != "" {
			row("chain", "%s → %s", strings.Join(chain, " → "), end)
		} else {
			row("chain", "%s (a proxy loop)", strings.Join(chain, " → "))
		}
	}
	policy := s.GetOnCorrupt()
	if es := p.GetEffectiveSpec(); es != nil {
		policy = es.GetOnCorrupt() // unset in the spec means the default
	}
	row("on corrupt", "%s", Policy(policy))
	row("capture data", "%s", captureLine(s))
	maxConns := "no limit"
	if m := s.GetMaxConnections(); m > 0 {
		maxConns = strconv.FormatUint(uint64(m), 10)
	}
	row("max conns", "%s", maxConns)
	dial := "5s (default)"
	if d := s.GetDialTimeout(); d != nil {
		dial = Duration(d.AsDuration())
	}
	row("dial timeout", "%s", dial)
	spares := "2 (default)"
	if s.SpareConnections != nil {
		spares = strconv.FormatUint(uint64(s.GetSpareConnections()), 10)
		if s.GetSpareConnections() == 0 {
			spares = "none"
		}
	}
	row("spare conns", "%s", spares)
	row("timeouts", "idle %s, message %s, response %s", Timeout(s.GetIdleTimeout(), proxy.DefaultIdleTimeout),
		Timeout(s.GetMessageTimeout(), proxy.DefaultMessageTimeout), Timeout(s.GetResponseTimeout(), proxy.DefaultResponseTimeout))
	if t := p.GetCreateTime(); t != nil {
		row("created", "%s (%s ago)", t.AsTime().In(orUTC(loc)).Format(time.RFC3339), Age(now.Sub(t.AsTime())))
	}
	row("connections", "%d active, %d total, %d refused, %d connect failures, %d timed out, %d loop refusals",
		c.GetConnectionsActive(), c.GetConnectionsTotal(), c.GetConnectionsRefused(), c.GetConnectFailures(),
		c.GetTimeouts(), c.GetLoopRefusals())
	if n := c.GetLoopEchoes(); n > 0 {
		row("loop echoes", "%d clients closed: their first request had come back around a forwarding loop", n)
	}
	if c.GetSparesDialled()+c.GetSpareFailures()+c.GetSparesLost() > 0 {
		// Lost spares or failed dials point at the server: one that turns
		// connections away, or is down.
		row("spares", "%d dialled, %d failed to dial, %d closed by the server unused",
			c.GetSparesDialled(), c.GetSpareFailures(), c.GetSparesLost())
	}
	row("traffic", "up %s in %d frames, down %s in %d frames",
		Bytes(c.GetBytesUp()), c.GetFramesUp(), Bytes(c.GetBytesDown()), c.GetFramesDown())
	// Errors of transactions (their results) and of connections (the
	// protocol broken, the server not reached, a client refused) are
	// counted apart: they have different causes and different fixes.
	row("transactions", "%d, %d with an error result", c.GetTransactions(), TxErrors(c))
	row("conn errors", "%s, %s, %d refused", Count(c.GetProtocolErrors(), "protocol error", "protocol errors"),
		Count(c.GetConnectFailures(), "connect failure", "connect failures"), c.GetConnectionsRefused())
	row("latency", "%s", latencyLine(c.GetLatency()))
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeProxyTail(w, p); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nlive connections: %d\n", len(conns))
	if len(conns) > 0 {
		return writeConnTable(w, conns, now, loc, "  ")
	}
	return nil
}

// captureLine says whether a proxy or tap captures session data, and how
// much of each transaction's.
func captureLine(s *snoopv1.ProxySpec) string {
	if !s.GetCaptureData() {
		return "off"
	}
	limit := s.GetCaptureLimit()
	if limit == 0 {
		limit = 32768 // the API's documented default
	}
	return fmt.Sprintf("on, up to %d bytes per transaction", limit)
}

// writeTap is the rest of show for a tap: what it captured and missed
// instead of a proxy's settings and connection errors.
func writeTap(w io.Writer, tw *tabwriter.Writer, row func(k, format string, args ...any), p *snoopv1.Proxy, now time.Time, loc *time.Location) error {
	s, c, t := p.GetSpec(), p.GetCounters(), p.GetCounters().GetTap()
	row("server", "%s", orDash(s.GetServer()))
	if l := s.GetLabels(); len(l) > 0 {
		row("labels", "%s", labels.String(l))
	}
	row("capture data", "%s", captureLine(s))
	if ts := p.GetCreateTime(); ts != nil {
		row("created", "%s (%s ago)", ts.AsTime().In(orUTC(loc)).Format(time.RFC3339), Age(now.Sub(ts.AsTime())))
	}
	row("connections", "%d active, %d total", c.GetConnectionsActive(), c.GetConnectionsTotal())
	row("packets", "%d captured, %d dropped by the kernel (its ring was full)", t.GetKernelPackets(), t.GetKernelDrops())
	row("missed", "%s, %s missing; %s, %s skipped",
		Count(t.GetCaptureGaps(), "capture gap", "capture gaps"), Bytes(t.GetCaptureMissingBytes()),
		Count(t.GetResyncs(), "resync", "resyncs"), Bytes(t.GetResyncSkippedBytes()))
	readErrs := strconv.FormatInt(t.GetReadErrors(), 10)
	if e := t.GetLastReadError(); e != "" {
		readErrs += " (last: " + oneLine(e) + ")"
	}
	row("read errors", "%s", readErrs)
	row("traffic", "up %s in %d frames, down %s in %d frames",
		Bytes(c.GetBytesUp()), c.GetFramesUp(), Bytes(c.GetBytesDown()), c.GetFramesDown())
	row("transactions", "%d, %d with an error result", c.GetTransactions(), TxErrors(c))
	row("protocol errors", "%d", c.GetProtocolErrors())
	row("latency", "%s", latencyLine(c.GetLatency()))
	if err := tw.Flush(); err != nil {
		return err
	}
	// No live connections: a tap has none of its own to list or close.
	return writeProxyTail(w, p)
}

// writeProxyTail is the end of show: per-operation table, faults and
// latency histogram.
func writeProxyTail(w io.Writer, p *snoopv1.Proxy) error {
	s, c := p.GetSpec(), p.GetCounters()
	if len(c.GetOps()) > 0 {
		fmt.Fprintln(w, "\nops:")
		tw := newTable(w)
		fmt.Fprintln(tw, "  OP\tCOUNT\tHIT%\tP50\tP99\tLATENCY\tRESULTS")
		for _, oc := range c.GetOps() {
			p50, p99 := "-", "-"
			if l := oc.GetLatency(); l.GetCount() > 0 {
				p50, p99 = Duration(l.GetP50().AsDuration()), Duration(l.GetP99().AsDuration())
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\n", OpName(oc.GetOp()), oc.GetCount(), hitRatio(oc.GetOp(), oc.GetResults()),
				p50, p99, histSparkline(oc.GetHistogram()), Results(oc.GetResults()))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.GetFaults()) > 0 {
		fmt.Fprintln(w, "\nfaults:")
		if err := WriteFaults(w, EffectiveFaults(p), c.GetFaults(), "  "); err != nil {
			return err
		}
	}
	if h := c.GetHistogram(); h.GetCount() > 0 {
		fmt.Fprintln(w, "\nlatency histogram:")
		s := apiconv.HistogramFromAPI(h)
		if err := WriteBars(w, &s, "  ", 40); err != nil {
			return err
		}
	}
	return nil
}

// Timeout renders one of a spec's optional timeouts: unset is the
// default, marked so; zero is off.
func Timeout(d *durationpb.Duration, def time.Duration) string {
	switch {
	case d == nil:
		return shortDuration(def) + " (default)"
	case d.AsDuration() == 0:
		return "off"
	}
	return shortDuration(d.AsDuration())
}

// shortDuration is time.Duration's form without trailing zero units:
// 5m rather than 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// latencyLine is a LatencySummary on one line.
func latencyLine(l *snoopv1.LatencySummary) string {
	if l.GetCount() == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s, mean %s (%d samples)",
		Duration(l.GetP50().AsDuration()), Duration(l.GetP90().AsDuration()), Duration(l.GetP99().AsDuration()),
		Duration(l.GetMax().AsDuration()), Duration(l.GetMean().AsDuration()), l.GetCount())
}

// hitRatio is the GET hit ratio as a percentage, or "-".
func hitRatio(op snoopv1.Op, results map[string]int64) string {
	ratio, ok := stats.OpRow{Op: op, Results: results}.HitRatio()
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(100*ratio, 'f', 1, 64) + "%"
}

// Results renders a result breakdown as "hit=9 miss=1", in the API's
// order of results, then any unknown ones by name.
func Results(m map[string]int64) string {
	var parts []string
	names := vocab.ResultNames()
	for _, r := range names {
		if n := m[r]; n != 0 {
			parts = append(parts, r+"="+strconv.FormatInt(n, 10))
		}
	}
	var other []string
	for r, n := range m {
		if n != 0 && !slices.Contains(names, r) {
			other = append(other, r+"="+strconv.FormatInt(n, 10))
		}
	}
	slices.Sort(other)
	parts = append(parts, other...)
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// WriteConns writes the table of snoopctl conns.
func WriteConns(w io.Writer, conns []*snoopv1.Connection, now time.Time, loc *time.Location) error {
	return writeConnTable(w, conns, now, loc, "")
}

func writeConnTable(w io.Writer, conns []*snoopv1.Connection, now time.Time, loc *time.Location, indent string) error {
	tw := newTable(w)
	fmt.Fprintln(tw, indent+"ID\tCLIENT\tSINCE\tAGE\tUP\tDOWN\tTX\tPENDING")
	for _, c := range conns {
		since, age := "-", "-"
		if t := c.GetOpenTime(); t != nil {
			since = t.AsTime().In(orUTC(loc)).Format(time.TimeOnly)
			age = Age(now.Sub(t.AsTime()))
		}
		fmt.Fprintf(tw, "%s%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", indent, c.GetId(), orDash(c.GetClient()), since, age,
			Bytes(int64(c.GetBytesUp())), Bytes(int64(c.GetBytesDown())), c.GetTransactions(), c.GetPending())
	}
	return tw.Flush()
}

// ApplyVerb is what applying did (or, in a dry run, would do) to a
// proxy, as a word for snoopctl apply's output.
func ApplyVerb(a snoopv1.ApplyAction, dryRun bool) string {
	verbs := map[snoopv1.ApplyAction][2]string{
		snoopv1.ApplyAction_APPLY_ACTION_CREATED:   {"created", "would create"},
		snoopv1.ApplyAction_APPLY_ACTION_CHANGED:   {"changed", "would change"},
		snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED: {"kept", "would keep"},
		snoopv1.ApplyAction_APPLY_ACTION_REMOVED:   {"removed", "would remove"},
	}
	v, ok := verbs[a]
	if !ok {
		return strings.ToLower(a.String())
	}
	if dryRun {
		return v[1]
	}
	return v[0]
}

// WriteApply writes snoopctl apply's report: one line per proxy, then the
// totals. recreated (may be nil) tells which changed proxies needed a new
// listener, which starts their counters again: they are reported
// "recreated", not "changed".
//
// before, when known, is each proxy's spec before the apply: a changed
// proxy's line then says what changed, field by field (SpecChanges).
func WriteApply(w io.Writer, r *snoopv1.ApplyProxiesResponse, dryRun bool, recreated func(name string) bool, before func(name string) *snoopv1.ProxySpec) error {
	counts := map[snoopv1.ApplyAction]int{}
	renewed := 0
	for _, res := range r.GetResults() {
		counts[res.GetAction()]++
		verb := ApplyVerb(res.GetAction(), dryRun)
		if res.GetAction() == snoopv1.ApplyAction_APPLY_ACTION_CHANGED && recreated != nil && recreated(res.GetName()) {
			renewed++
			verb = "recreated"
			if dryRun {
				verb = "would recreate"
			}
			if _, err := fmt.Fprintf(w, "%s %s (a new listener: its counters start again)\n", verb, res.GetName()); err != nil {
				return err
			}
			continue
		}
		what := ""
		if res.GetAction() == snoopv1.ApplyAction_APPLY_ACTION_CHANGED && before != nil {
			if old := before(res.GetName()); old != nil && res.GetProxy().GetSpec() != nil {
				if ch := SpecChanges(old, res.GetProxy().GetSpec()); len(ch) > 0 {
					what = ": " + strings.Join(ch, ", ")
				}
			}
		}
		if _, err := fmt.Fprintf(w, "%s %s%s\n", verb, res.GetName(), what); err != nil {
			return err
		}
	}
	prefix := ""
	if dryRun {
		prefix = "dry run, nothing changed: "
	}
	changed := fmt.Sprint(counts[snoopv1.ApplyAction_APPLY_ACTION_CHANGED] - renewed)
	if renewed > 0 {
		changed = fmt.Sprintf("%s changed, %d recreated", changed, renewed)
	} else {
		changed += " changed"
	}
	_, err := fmt.Fprintf(w, "%s%d created, %s, %d kept, %d removed\n", prefix,
		counts[snoopv1.ApplyAction_APPLY_ACTION_CREATED], changed,
		counts[snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED], counts[snoopv1.ApplyAction_APPLY_ACTION_REMOVED])
	return err
}

// Age renders how long ago something happened, to the second.
func Age(d time.Duration) string {
	if d < time.Second {
		return "0s"
	}
	return d.Round(time.Second).String()
}

func orUTC(loc *time.Location) *time.Location {
	if loc == nil {
		return time.UTC
	}
	return loc
}

// Count writes n with its noun in the right number: "1 error", "2 errors".
func Count(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.FormatInt(n, 10) + " " + many
}
