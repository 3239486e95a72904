package format

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// jsonOptions are the protojson options of every JSON snoopctl writes:
// on one line, with the field names of the .proto file, which are also
// what the API documentation uses.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true}

// JSON returns m as one line of protojson, without a trailing newline.
//
// protojson deliberately varies its whitespace from build to build so
// that nobody compares its output byte for byte; snoopctl's output is
// meant for diffs and line-oriented tools, so it is compacted to a stable
// form.
func JSON(m proto.Message) ([]byte, error) {
	return AppendJSON(nil, m)
}

// AppendJSON appends m as one line of compact protojson to b.
func AppendJSON(b []byte, m proto.Message) ([]byte, error) {
	raw, err := jsonOptions.Marshal(m)
	if err != nil {
		return b, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, raw); err != nil {
		return b, fmt.Errorf("compact %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return buf.Bytes(), nil
}

// RawJSON returns m as compact protojson for embedding in a larger JSON
// document built with encoding/json.
func RawJSON(m proto.Message) (json.RawMessage, error) {
	b, err := JSON(m)
	return json.RawMessage(b), err
}
