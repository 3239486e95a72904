package ctl

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiwire"
)

// watchCodec is the protobuf codec, except that it decodes the event
// stream's responses with apiwire's decoder: a tail reads every event of a
// busy daemon, and the generic unmarshaller allocates every nested message
// of every event, which made the tail process cost more than the daemon
// it watched. The response's bytes are copied out of gRPC's buffers once
// (they are reused after Unmarshal returns) and the events refer to that
// copy, which nothing reuses.
type watchCodec struct{ proto encoding.CodecV2 }

func (c watchCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c watchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch r := v.(type) {
	case *apiwire.Response:
		// A response whose storage is used again (see receive): the
		// bytes go into its own buffer.
		b := r.Buffer(data.Len())
		data.CopyTo(b)
		return r.Unmarshal(b)
	case *snoopv1.WatchEventsResponse:
		return apiwire.UnmarshalResponse(data.Materialize(), r)
	}
	return c.proto.Unmarshal(data, v)
}

func (c watchCodec) Name() string { return proto.Name }

// watchDecoding is the call option that makes a WatchEvents call decode
// with watchCodec.
var watchDecoding = grpc.ForceCodecV2(watchCodec{proto: encoding.GetCodecV2(proto.Name)})
