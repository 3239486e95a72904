package daemon

import (
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// preEncoded is a message already in its protobuf wire form: the watch
// streams write their responses around events the hub encoded once,
// straight into a buffer of a responsePool, which gRPC puts back once it
// has written it (or dropped the message).
type preEncoded struct {
	b    *[]byte
	pool mem.BufferPool
}

// codec is the daemon's gRPC codec: protobuf, except that a preEncoded
// message goes out as its buffer, without a copy.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2(proto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		return mem.BufferSlice{mem.NewBuffer(p.b, p.pool)}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c codec) Name() string { return proto.Name }

// responsePool holds the buffers watch responses are written into, shared
// by the streams of a server. gRPC's default pool would do, but it clears
// every buffer it hands out, and a batch of about 100 KB comes from its
// 1 MiB tier: the daemon spent more clearing a megabyte per response than
// copying the response into it. Every byte of a response is written
// before it is sent, so these buffers are handed out as they were left.
// Its sizes follow gRPC's tiers up to a batch of maxBatchBytes and its
// last event, so that what a stream whose client stops reading holds in
// the transport (up to its write quota of responses) is no larger than
// before: a response up to gRPC's pooling threshold (a single event) gets
// a buffer of its own size, which gRPC never pools, and so does one
// larger than the largest size.
type responsePool struct {
	tiers [len(responseSizes)]sync.Pool
}

var responseSizes = [...]int{4 << 10, 16 << 10, 32 << 10, largeResponse}

// largeResponse holds a batch of up to maxBatchBytes and its last event.
const largeResponse = maxBatchBytes + 64<<10

var _ mem.BufferPool = (*responsePool)(nil)

func (p *responsePool) Get(n int) *[]byte {
	if !mem.IsBelowBufferPoolingThreshold(n) {
		for i, size := range responseSizes {
			if n <= size {
				if b, ok := p.tiers[i].Get().(*[]byte); ok {
					*b = (*b)[:n]
					return b
				}
				b := make([]byte, n, size)
				return &b
			}
		}
	}
	b := make([]byte, n)
	return &b
}

func (p *responsePool) Put(b *[]byte) {
	for i, size := range responseSizes {
		if cap(*b) == size {
			p.tiers[i].Put(b)
			return
		}
	}
}
