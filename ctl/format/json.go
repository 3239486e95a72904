package format

import (
	"encoding/json"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apijson"
)

// Every JSON snoopctl writes is compact protojson on one line with the
// field names of the .proto file, which are also what the API
// documentation uses (apijson.ProtoKeys).

// JSON returns m as one line of compact protojson, without a trailing
// newline.
func JSON(m proto.Message) ([]byte, error) {
	return AppendJSON(nil, m)
}

// AppendJSON appends m as one line of compact protojson to b.
func AppendJSON(b []byte, m proto.Message) ([]byte, error) {
	return apijson.AppendProto(b, m, apijson.ProtoKeys)
}

// RawJSON returns m as compact protojson for embedding in a larger JSON
// document built with encoding/json.
func RawJSON(m proto.Message) (json.RawMessage, error) {
	b, err := JSON(m)
	return json.RawMessage(b), err
}

// AppendResponseLine appends r as one line of compact protojson, without
// the newline, to b: what AppendJSON appends, written by apijson's hand
// encoder without allocating (tail -o json and save write every event
// through it).
func AppendResponseLine(b []byte, r *snoopv1.WatchEventsResponse) ([]byte, error) {
	return apijson.AppendResponse(b, r, apijson.ProtoKeys)
}

// AppendEventLine appends the line of a response that carries ev alone
// ({"event":{...}}), as AppendResponseLine would for it: each event of a
// batched response is written as the line an unbatched one would have.
func AppendEventLine(b []byte, ev *snoopv1.Event) ([]byte, error) {
	return apijson.AppendEventResponse(b, ev, apijson.ProtoKeys)
}

// AppendEventLineWire appends the line AppendEventLine appends for the
// event whose protobuf encoding is wire, written from the wire form
// without decoding it into messages first, and sets facts (if not nil)
// to what a summary counts of it.
func AppendEventLineWire(b, wire []byte, facts *apijson.Facts) ([]byte, error) {
	return apijson.AppendEventResponseWire(b, wire, apijson.ProtoKeys, facts)
}

// JSONDuration is a duration in snoopctl's own JSON objects (stats, top),
// written as the API writes its google.protobuf.Duration fields:
// "0.000250s", "2s". One form for every duration a script reads, whether
// it came from the daemon or from snoopctl.
type JSONDuration time.Duration

// MarshalJSON writes d as protojson writes a Duration.
func (d JSONDuration) MarshalJSON() ([]byte, error) {
	return JSON(durationpb.New(time.Duration(d)))
}
