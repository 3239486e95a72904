package apijson

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// Keys chooses the object keys: the two spellings protojson knows.
type Keys uint8

const (
	// ProtoKeys are the field names of the .proto file ("connection_id"),
	// protojson's UseProtoNames: what snoopctl writes, and what the API
	// documentation uses.
	ProtoKeys Keys = iota
	// CamelKeys are protojson's default lowerCamelCase JSON names
	// ("connectionId"): what the NATS export has always written, kept so
	// that its consumers' keys do not change.
	CamelKeys
)

func (k Keys) options() protojson.MarshalOptions {
	return protojson.MarshalOptions{UseProtoNames: k == ProtoKeys}
}

// AppendProto appends any message m to b as compact protojson with keys
// k: the reference the hand encoder is held to, and its fallback.
//
// protojson deliberately varies its whitespace from build to build so
// that nobody compares its output byte for byte; the output here is meant
// for diffs, line-oriented tools and stable payloads, so it is compacted
// to a stable form. On an error b is returned as it was.
func AppendProto(b []byte, m proto.Message, k Keys) ([]byte, error) {
	raw, err := k.options().Marshal(m)
	if err != nil {
		return b, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, raw); err != nil {
		return b, fmt.Errorf("compact %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return buf.Bytes(), nil
}

// AppendEvent appends ev to b as a JSON object: exactly what AppendProto
// appends for it. On an error (protojson's: invalid UTF-8 in a string) b
// is returned as it was.
func AppendEvent(b []byte, ev *snoopv1.Event, k Keys) ([]byte, error) {
	o := obj{b: b, camel: k == CamelKeys}
	if err := o.event(ev); err != nil {
		return AppendProto(b, ev, k)
	}
	return o.b, nil
}

// AppendResponse appends r to b as a JSON object, without a newline:
// exactly what AppendProto appends for it. On an error b is returned as
// it was.
func AppendResponse(b []byte, r *snoopv1.WatchEventsResponse, k Keys) ([]byte, error) {
	out, err := appendResponse(b, k, r.GetEvent(), r.GetDropped(), r.GetHistoryDone(), r.GetHistoryMissing(), r.GetHistoryBeyond(), r.GetEvents())
	if err != nil {
		return AppendProto(b, r, k)
	}
	return out, nil
}

// AppendEventResponse appends what AppendResponse would for a response
// carrying ev alone ({"event":{...}}), without building one: each event
// of a batched response can be written as an unbatched one would be.
func AppendEventResponse(b []byte, ev *snoopv1.Event, k Keys) ([]byte, error) {
	out, err := appendResponse(b, k, ev, 0, false, 0, 0, nil)
	if err != nil {
		return AppendProto(b, &snoopv1.WatchEventsResponse{Event: ev}, k)
	}
	return out, nil
}
