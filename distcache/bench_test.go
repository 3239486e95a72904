package distcache

import (
	"bytes"
	"io"
	"testing"
)

// benchStream is n messages with payloads of size bytes, as a client would
// pipeline them.
func benchStream(size, n int) []byte {
	var b []byte
	payload := bytes.Repeat([]byte{0x5a}, size)
	for i := range n {
		b = AppendMessage(b, false, uint32(i), OpAdd, payload)
	}
	return b
}

// benchmarkDecoder feeds a stream in read-sized chunks, the way a proxy sees
// it, and reports bytes/s, frames/s and allocations.
func benchmarkDecoder(b *testing.B, payload, chunk int) {
	stream := benchStream(payload, 256)
	var d Decoder
	frames := int64(0)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d.Reset(ClientToServer)
		for off := 0; off < len(stream); off += chunk {
			p := stream[off:min(off+chunk, len(stream))]
			for len(p) > 0 {
				n, _, err := d.Next(p)
				if err != nil {
					b.Fatal(err)
				}
				p = p[n:]
			}
		}
		frames += d.Frames()
	}
	b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "frames/s")
}

func BenchmarkDecoder1KiB(b *testing.B)          { benchmarkDecoder(b, 1024, 16<<10) }
func BenchmarkDecoder1KiBSmallRead(b *testing.B) { benchmarkDecoder(b, 1024, 1500) }
func BenchmarkDecoder16B(b *testing.B)           { benchmarkDecoder(b, 16, 16<<10) }
func BenchmarkDecoder32KiB(b *testing.B)         { benchmarkDecoder(b, 32768, 16<<10) }

// BenchmarkDecoderScan1KiB adds the payload scanner with digests on, as a proxy
// does for transactions.
func BenchmarkDecoderScan1KiB(b *testing.B) {
	stream := benchStream(1024, 256)
	var d Decoder
	s := NewPayloadScanner(ScanOptions{Digest: true})
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d.Reset(ClientToServer)
		for off := 0; off < len(stream); off += 16 << 10 {
			p := stream[off:min(off+16<<10, len(stream))]
			for len(p) > 0 {
				n, st, err := d.Next(p)
				if err != nil {
					b.Fatal(err)
				}
				if st.Header && d.MessageFrames() == 1 {
					s.Start(d.Header().Op, false)
				}
				s.Write(st.Data)
				if st.MessageEnd {
					_ = s.Summary()
				}
				p = p[n:]
			}
		}
	}
}

// BenchmarkReader1KiB measures whole-message reading, which the cache server
// and the load generator do.
func BenchmarkReader1KiB(b *testing.B) {
	stream := benchStream(1024, 256)
	r := bytes.NewReader(stream)
	mr := NewReader(r, ClientToServer)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r.Reset(stream)
		for {
			if _, err := mr.ReadMessage(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		mr.readErr = nil
	}
}
