package format

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// WriteFaults writes a proxy's faults as a table, one line each, with
// their counters; indent starts every line.
func WriteFaults(w io.Writer, faults []*snoopv1.Fault, counters []*snoopv1.FaultCounters, indent string) error {
	byName := map[string]*snoopv1.FaultCounters{}
	for _, c := range counters {
		byName[c.GetName()] = c
	}
	tw := newTable(w)
	fmt.Fprintln(tw, indent+"NAME\tTYPE\tON\tOPS\tPROB\tLIMIT\tEFFECT\tMATCHED\tAPPLIED")
	for _, f := range faults {
		c := byName[f.GetName()]
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", indent, f.GetName(), FaultType(f.GetType()), FaultDirection(f.GetDirection()),
			faultOps(f.GetOps()), faultProbability(f), faultLimit(f), FaultEffect(f), c.GetMatched(), c.GetApplied())
	}
	return tw.Flush()
}

// FaultType names a fault type as snoopctl's --type takes it.
func FaultType(t snoopv1.FaultType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "FAULT_TYPE_"))
}

// FaultDirection names a direction as snoopctl's --direction takes it.
func FaultDirection(d snoopv1.FaultDirection) string {
	if d == snoopv1.FaultDirection_FAULT_DIRECTION_UNSPECIFIED {
		return "default"
	}
	return strings.ToLower(strings.TrimPrefix(d.String(), "FAULT_DIRECTION_"))
}

func faultOps(ops []snoopv1.Op) string {
	if len(ops) == 0 {
		return "all"
	}
	var names []string
	for _, op := range ops {
		names = append(names, OpName(op))
	}
	return strings.Join(names, ",")
}

func faultProbability(f *snoopv1.Fault) string {
	p := "1"
	if f.Probability != nil {
		p = strconv.FormatFloat(f.GetProbability(), 'g', -1, 64)
	}
	if f.GetSeed() != 0 {
		p += " seed " + strconv.FormatUint(f.GetSeed(), 10)
	}
	return p
}

func faultLimit(f *snoopv1.Fault) string {
	var parts []string
	if b := f.GetBudget(); b > 0 {
		parts = append(parts, "first "+strconv.FormatUint(b, 10))
	}
	if d := f.GetDuration(); d != nil {
		lim := "for " + shortDuration(d.AsDuration())
		// The end is fixed when the fault was declared, and outlives a
		// restart: say when it is, or that it has passed.
		if e := f.GetEndsAt(); e != nil && e.IsValid() {
			at := e.AsTime().UTC().Truncate(time.Second).Format(time.RFC3339)
			if e.AsTime().After(time.Now()) {
				lim += " until " + at
			} else {
				lim += ", ended " + at
			}
		}
		parts = append(parts, lim)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// FaultEffect says in a few words what a fault does to what it matches.
func FaultEffect(f *snoopv1.Fault) string {
	var s string
	switch f.GetType() {
	case snoopv1.FaultType_FAULT_TYPE_LATENCY:
		s = "hold " + shortDuration(f.GetDelay().AsDuration())
		if j := f.GetJitter(); j != nil {
			s += " ± " + shortDuration(j.AsDuration())
		}
	case snoopv1.FaultType_FAULT_TYPE_MISS:
		s = "answer miss"
	case snoopv1.FaultType_FAULT_TYPE_ERROR:
		s = "answer " + f.GetStatus()
	case snoopv1.FaultType_FAULT_TYPE_DROP:
		s = "close"
	case snoopv1.FaultType_FAULT_TYPE_RESET:
		s = "reset"
	case snoopv1.FaultType_FAULT_TYPE_STALL:
		s = "stall " + shortDuration(f.GetDelay().AsDuration())
	case snoopv1.FaultType_FAULT_TYPE_BANDWIDTH:
		s = Bytes(int64(f.GetRate())) + "/s"
	case snoopv1.FaultType_FAULT_TYPE_CORRUPT:
		s = "damage " + f.GetField()
	}
	if f.GetFilter() != "" {
		s += " if " + oneLine(f.GetFilter())
	}
	return s
}
