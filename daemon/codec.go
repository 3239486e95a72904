package daemon

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// preEncoded is a message already in its protobuf wire form: the watch
// streams write their responses around events the hub encoded once.
type preEncoded struct{ b []byte }

// codec is the daemon's gRPC codec: protobuf, except that a preEncoded
// message goes out as its bytes. They are copied into a buffer of gRPC's
// pool (as the protobuf codec marshals into one), because the transport
// may still hold the message after SendMsg returns and the sender reuses
// its buffer at once.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2(proto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		return mem.BufferSlice{mem.Copy(p.b, mem.DefaultBufferPool())}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c codec) Name() string { return proto.Name }
