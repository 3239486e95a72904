package format

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/labels"
)

// SpecChanges lists what differs from old to now, field by field, in
// the words of a spec: "server IP:a:1 → IP:b:1", "enabled true → false",
// "faults +slow -drop ~flaky" (added, removed, changed, by name). It is
// what apply and apply --dry-run print after "changed NAME:", as kubectl
// diff shows what an apply would do.
func SpecChanges(old, now *snoopv1.ProxySpec) []string {
	var out []string
	om, nm := old.ProtoReflect(), now.ProtoReflect()
	fields := om.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.Name() == "name" {
			continue
		}
		if f.Name() == "faults" {
			if s := faultChanges(old.GetFaults(), now.GetFaults()); s != "" {
				out = append(out, "faults "+s)
			}
			continue
		}
		ov, nv := specValue(om, f), specValue(nm, f)
		if ov != nv {
			out = append(out, fmt.Sprintf("%s %s → %s", strings.ReplaceAll(string(f.Name()), "_", "-"), ov, nv))
		}
	}
	return out
}

// specValue renders one field of a spec as snoopctl's flags write it;
// "unset" for a field left to the daemon's default.
func specValue(m protoreflect.Message, f protoreflect.FieldDescriptor) string {
	if !m.Has(f) {
		return "unset"
	}
	v := m.Get(f)
	if f.IsMap() {
		// labels: k=v,... sorted by key, as list and show write them.
		kv := map[string]string{}
		v.Map().Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
			kv[k.String()] = e.String()
			return true
		})
		return labels.String(kv)
	}
	switch f.Kind() {
	case protoreflect.MessageKind:
		if d, ok := v.Message().Interface().(*durationpb.Duration); ok {
			return Duration(d.AsDuration())
		}
		return fmt.Sprint(v.Message().Interface())
	case protoreflect.EnumKind:
		if e := f.Enum().Values().ByNumber(v.Enum()); e != nil {
			return strings.ToLower(strings.TrimPrefix(string(e.Name()), enumPrefix(f.Enum())))
		}
	}
	if f.Name() == "socket_mode" {
		return fmt.Sprintf("%04o", v.Uint())
	}
	return v.String()
}

// enumPrefix is the common prefix of an enum's value names
// (CORRUPT_POLICY_), which the flags leave out.
func enumPrefix(e protoreflect.EnumDescriptor) string {
	vals := e.Values()
	if vals.Len() == 0 {
		return ""
	}
	p := string(vals.Get(0).Name())
	for i := 1; i < vals.Len(); i++ {
		n := string(vals.Get(i).Name())
		for !strings.HasPrefix(n, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}

// faultChanges names the faults added (+), removed (-) and changed (~)
// from old to now, by name, in now's order then old's.
func faultChanges(old, now []*snoopv1.Fault) string {
	byName := map[string]*snoopv1.Fault{}
	for _, f := range old {
		byName[f.GetName()] = f
	}
	var parts []string
	seen := map[string]bool{}
	for _, f := range now {
		seen[f.GetName()] = true
		switch o, ok := byName[f.GetName()]; {
		case !ok:
			parts = append(parts, "+"+f.GetName())
		case !sameFault(o, f):
			parts = append(parts, "~"+f.GetName())
		}
	}
	for _, f := range old {
		if !seen[f.GetName()] {
			parts = append(parts, "-"+f.GetName())
		}
	}
	return strings.Join(parts, " ")
}

// sameFault compares two declarations of a fault; the end the daemon
// fixed (ends_at) is not part of what was declared.
func sameFault(a, b *snoopv1.Fault) bool {
	a, b = proto.Clone(a).(*snoopv1.Fault), proto.Clone(b).(*snoopv1.Fault)
	a.EndsAt, b.EndsAt = nil, nil
	return proto.Equal(a, b)
}
