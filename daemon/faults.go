package daemon

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/proxy"
)

// faultSpecs converts a spec's faults to the proxy package's, checked, and
// returns them with their API form with every default filled in, as
// effective_spec shows them (spec keeps them as declared).
func faultSpecs(in []*snoopv1.Fault) ([]proxy.FaultSpec, []*snoopv1.Fault, error) {
	if len(in) == 0 {
		return nil, nil, nil
	}
	specs := make([]proxy.FaultSpec, len(in))
	for i, f := range in {
		s, err := faultSpec(f)
		if err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return nil, nil, &FieldError{Field: fmt.Sprintf("faults[%d].%s", i, fe.Field), Reason: fe.Reason, Err: fe.Err}
			}
			return nil, nil, err
		}
		specs[i] = s
	}
	norm, err := proxy.NormalizeFaults(specs)
	if err != nil {
		var fe *proxy.FaultSpecError
		if errors.As(err, &fe) {
			return nil, nil, &FieldError{Field: fmt.Sprintf("faults[%d].%s", fe.Index, fe.Field), Reason: fe.Reason, Err: err}
		}
		return nil, nil, err
	}
	out := make([]*snoopv1.Fault, len(norm))
	for i, s := range norm {
		out[i] = apiFault(s)
	}
	return norm, out, nil
}

// fixEnds gives every fault of a normalised spec that has a duration its
// end (Fault.ends_at, and the proxy's FaultSpec.Ends in cfg), fixed when
// the fault is declared: a fault cur declares unchanged (equal but for
// its end) keeps cur's end; any other, new or changed, ends its duration
// after now. Whatever end the caller gave is replaced, so a restart or a
// re-apply never grants a fault its duration again. With cur the spec
// itself (a restored one), the saved ends are kept.
func fixEnds(spec *snoopv1.ProxySpec, cfg *proxy.Config, cur *snoopv1.ProxySpec, now time.Time) {
	// Decided first, set after: cur may be spec itself.
	ends := make([]*timestamppb.Timestamp, len(spec.GetFaults()))
	for i, f := range spec.GetFaults() {
		if d := f.GetDuration(); d != nil && d.AsDuration() > 0 {
			ends[i] = timestamppb.New(now.Add(d.AsDuration()))
			if old := declaredAs(cur, f); old != nil {
				ends[i] = proto.Clone(old).(*timestamppb.Timestamp)
			}
		}
	}
	for i, f := range spec.GetFaults() {
		f.EndsAt = ends[i]
		if i < len(cfg.Faults) {
			cfg.Faults[i].Ends = time.Time{}
			if f.EndsAt != nil {
				cfg.Faults[i].Ends = f.EndsAt.AsTime()
			}
		}
	}
}

// declaredAs returns the end of cur's fault that is f but for its end;
// nil if cur has none, or it has no end. Faults are compared with their
// defaults filled in: one declared again in other words, a default
// written out, is the same fault.
func declaredAs(cur *snoopv1.ProxySpec, f *snoopv1.Fault) *timestamppb.Timestamp {
	bare := meaning(f)
	for _, g := range cur.GetFaults() {
		if g.GetName() != f.GetName() || g.GetEndsAt() == nil || !g.GetEndsAt().IsValid() {
			continue
		}
		if proto.Equal(bare, meaning(g)) {
			return g.GetEndsAt()
		}
	}
	return nil
}

// meaning is f with its defaults filled in and without its end; f as
// it is (without its end) if it does not convert.
func meaning(f *snoopv1.Fault) *snoopv1.Fault {
	g := proto.Clone(f).(*snoopv1.Fault)
	g.EndsAt = nil
	if _, norm, err := faultSpecs([]*snoopv1.Fault{g}); err == nil {
		g = norm[0]
		g.EndsAt = nil
	}
	return g
}

// faultDuration reads one of a fault's durations; unset is 0.
func faultDuration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
		return 0, &FieldError{Field: field, Reason: "want a valid, non-negative duration", Err: err}
	}
	return d.AsDuration(), nil
}

// unknownName is what a client library sends for an enum name it does not
// know (a misspelt "REQUEST" for FAULT_DIRECTION_REQUEST): protobufjs
// (grpc-js with proto-loader) sends 0, and protojson told to discard
// unknown input leaves the field out, which is the same on the wire. Errors about a 0 say so, since the caller never wrote
// the 0.
const unknownName = "a client library sends 0 for an enum name it does not know"

// enumNames lists an enum's values but the zero one, for error messages:
// "FAULT_TYPE_LATENCY (1), ..., or FAULT_TYPE_CORRUPT (8)".
func enumNames(values protoreflect.EnumValueDescriptors) string {
	var names []string
	for i := range values.Len() {
		if v := values.Get(i); v.Number() != 0 {
			names = append(names, fmt.Sprintf("%s (%d)", v.Name(), v.Number()))
		}
	}
	if len(names) > 1 {
		names[len(names)-1] = "or " + names[len(names)-1]
	}
	return strings.Join(names, ", ")
}

// faultType checks a fault's type as the API numbers it. The number is
// checked before it is narrowed to the proxy package's byte, so that 257
// is not taken as 1.
func faultType(t snoopv1.FaultType) (proxy.FaultType, error) {
	want := "want " + enumNames(t.Descriptor().Values())
	switch {
	case t == snoopv1.FaultType_FAULT_TYPE_UNSPECIFIED:
		return 0, &FieldError{Field: "type", Reason: "missing, or 0 (FAULT_TYPE_UNSPECIFIED; " + unknownName + "): " + want}
	case t.Descriptor().Values().ByNumber(protoreflect.EnumNumber(t)) == nil:
		return 0, &FieldError{Field: "type", Reason: fmt.Sprintf("unknown type %d: %s", int32(t), want)}
	}
	return proxy.FaultType(t), nil
}

// faultDirection checks a fault's direction; 0 is the type's default
// (a misspelt name arrives as 0 too: the answer's direction, filled in,
// shows which one the fault got).
func faultDirection(d snoopv1.FaultDirection) (proxy.FaultDirection, error) {
	if d != 0 && d.Descriptor().Values().ByNumber(protoreflect.EnumNumber(d)) == nil {
		return 0, &FieldError{Field: "direction", Reason: fmt.Sprintf("unknown direction %d: want %s, or 0 (unset) for the type's default", int32(d), enumNames(d.Descriptor().Values()))}
	}
	return proxy.FaultDirection(d), nil
}

func faultSpec(f *snoopv1.Fault) (proxy.FaultSpec, error) {
	typ, err := faultType(f.GetType())
	if err != nil {
		return proxy.FaultSpec{}, err
	}
	dir, err := faultDirection(f.GetDirection())
	if err != nil {
		return proxy.FaultSpec{}, err
	}
	s := proxy.FaultSpec{
		Name:         f.GetName(),
		Type:         typ,
		Direction:    dir,
		Filter:       f.GetFilter(),
		Probability:  1,
		Seed:         f.GetSeed(),
		Acknowledged: f.GetAcknowledgeCorruption(),
	}
	if f.Probability != nil {
		s.Probability = f.GetProbability()
	}
	for j, op := range f.GetOps() {
		o, ok := apiconv.OpFromAPI(op)
		if !ok {
			reason := fmt.Sprintf("%d is not an operation", int32(op))
			if op == snoopv1.Op_OP_UNSPECIFIED {
				reason = "0 (OP_UNSPECIFIED) is not an operation; " + unknownName + " (such as \"GET\")"
			}
			return s, &FieldError{Field: fmt.Sprintf("ops[%d]", j), Reason: reason + ": want " + enumNames(op.Descriptor().Values())}
		}
		s.Ops = append(s.Ops, o)
	}
	if f.GetBudget() > math.MaxInt64 {
		return s, &FieldError{Field: "budget", Reason: "too large"}
	}
	s.Budget = int64(f.GetBudget())
	if f.GetRate() > math.MaxInt64 {
		return s, &FieldError{Field: "rate", Reason: "too large"}
	}
	s.Rate = int64(f.GetRate())
	if s.Duration, err = faultDuration("duration", f.GetDuration()); err != nil {
		return s, err
	}
	if s.Delay, err = faultDuration("delay", f.GetDelay()); err != nil {
		return s, err
	}
	if s.Jitter, err = faultDuration("jitter", f.GetJitter()); err != nil {
		return s, err
	}
	// The end is snoopd's: fixEnds decides it for every declared fault;
	// read here only so that a spec restored from the state dir keeps it.
	if t := f.GetEndsAt(); t != nil && t.IsValid() && s.Duration > 0 {
		s.Ends = t.AsTime()
	}
	if s.Type == proxy.FaultError {
		s.Status = distcache.StatusNotOK
		if f.GetStatus() != "" {
			if s.Status, err = proxy.ParseStatus(f.GetStatus()); err != nil {
				return s, &FieldError{Field: "status", Reason: err.Error()}
			}
		}
	} else if f.GetStatus() != "" {
		return s, &FieldError{Field: "status", Reason: "only an error fault takes a status"}
	}
	if f.GetField() != "" {
		if s.Type != proxy.FaultCorrupt {
			return s, &FieldError{Field: "field", Reason: "only a corrupt fault takes a field"}
		}
		if s.Field, err = proxy.ParseHeaderField(f.GetField()); err != nil {
			return s, &FieldError{Field: "field", Reason: err.Error()}
		}
	}
	return s, nil
}

// apiFault renders a normalised fault for the API.
func apiFault(s proxy.FaultSpec) *snoopv1.Fault {
	f := &snoopv1.Fault{
		Name:                  s.Name,
		Type:                  snoopv1.FaultType(s.Type),
		Direction:             snoopv1.FaultDirection(s.Direction),
		Filter:                s.Filter,
		Probability:           proto.Float64(s.Probability),
		Seed:                  s.Seed,
		Budget:                uint64(s.Budget),
		Rate:                  uint64(s.Rate),
		AcknowledgeCorruption: s.Acknowledged,
	}
	for _, op := range s.Ops {
		f.Ops = append(f.Ops, apiconv.Op(op))
	}
	for _, d := range []struct {
		v  time.Duration
		to **durationpb.Duration
	}{{s.Duration, &f.Duration}, {s.Delay, &f.Delay}, {s.Jitter, &f.Jitter}} {
		if d.v > 0 {
			*d.to = durationpb.New(d.v)
		}
	}
	if s.Type == proxy.FaultError {
		f.Status = s.Status.String()
	}
	if !s.Ends.IsZero() {
		f.EndsAt = timestamppb.New(s.Ends)
	}
	if s.Type == proxy.FaultCorrupt {
		f.Field = s.Field.String()
	}
	return f
}

// faultCounters renders the per-fault counters.
func faultCounters(fs []proxy.FaultStats) []*snoopv1.FaultCounters {
	var out []*snoopv1.FaultCounters
	for _, f := range fs {
		out = append(out, &snoopv1.FaultCounters{Name: f.Name, Matched: f.Matched, Applied: f.Applied})
	}
	return out
}
