package capture

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
)

// FuzzReader feeds arbitrary bytes, plain and gzipped, to the capture
// reader: it must never panic, must end with io.EOF, ErrTruncated or an
// error naming the line, and every event it returns must survive a round
// trip through the writer's encoding.
func FuzzReader(f *testing.F) {
	f.Add([]byte(`{"event":{"kind":"EVENT_KIND_TRANSACTION","proxy":"a","transaction":{"op":"OP_GET","result":"hit"}}}` + "\n" + `{"dropped":"3"}` + "\n"))
	f.Add([]byte(`{"dropped":"3"}` + "\n" + `{"event":{"kind"`))
	f.Add([]byte("\n\n"))
	f.Add([]byte{0x1f, 0x8b, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var gz bytes.Buffer
		w := gzip.NewWriter(&gz)
		w.Write(data)
		w.Close()
		for _, in := range [][]byte{data, gz.Bytes()} {
			r, err := NewReader("fuzz", bytes.NewReader(in))
			if err != nil {
				if !strings.Contains(err.Error(), "fuzz") {
					t.Fatalf("error does not name the input: %v", err)
				}
				continue
			}
			for n := 0; ; n++ {
				if n > len(in)+1 {
					t.Fatal("more records than lines")
				}
				ev, err := r.Next()
				if err == io.EOF || errors.Is(err, ErrTruncated) {
					break
				}
				if err != nil {
					if !strings.Contains(err.Error(), "fuzz") {
						t.Fatalf("error does not name the input: %v", err)
					}
					break
				}
				b, err := protojson.Marshal(ev)
				if err != nil {
					t.Fatalf("event read back cannot be written: %v", err)
				}
				if _, err := Decode(b); err != nil {
					t.Fatalf("event written cannot be read: %v", err)
				}
			}
			r.Close()
		}
	})
}
