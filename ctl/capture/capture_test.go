package capture

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// event returns a distinct transaction event; i is its request uid.
func event(i int) *snoopv1.WatchEventsResponse {
	return &snoopv1.WatchEventsResponse{Event: &snoopv1.Event{
		Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: "p", ConnectionId: 1,
		Time: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, i, time.UTC)),
		Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: uint32(i), SessionId: []byte{byte(i)},
			Result: "hit", Latency: durationpb.New(time.Duration(i) * time.Microsecond)},
	}}
}

func writeAll(t *testing.T, path string, o Options, rs []*snoopv1.WatchEventsResponse) *Writer {
	t.Helper()
	w, err := Create(path, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if err := w.WriteEvent(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w
}

func readAll(t *testing.T, names ...string) ([]*snoopv1.WatchEventsResponse, error) {
	t.Helper()
	var out []*snoopv1.WatchEventsResponse
	for _, n := range names {
		r, err := Open(n, nil)
		if err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				r.Close()
				return out, err
			}
			out = append(out, resp)
		}
		r.Close()
	}
	return out, nil
}

func equalStreams(t *testing.T, got, want []*snoopv1.WatchEventsResponse) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d responses, want %d", len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("response %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl")
	var want []*snoopv1.WatchEventsResponse
	for i := range 100 {
		want = append(want, event(i))
		if i == 50 {
			want = append(want, &snoopv1.WatchEventsResponse{Dropped: 7})
		}
	}
	// A small batch size makes the writer flush many times mid-stream.
	w := writeAll(t, path, Options{FlushSize: 300}, want)
	if w.Lines() != int64(len(want)) {
		t.Errorf("Lines = %d, want %d", w.Lines(), len(want))
	}
	got, err := readAll(t, path)
	if err != nil {
		t.Fatal(err)
	}
	equalStreams(t, got, want)
}

func TestCreateRefusesExisting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl")
	writeAll(t, path, Options{}, []*snoopv1.WatchEventsResponse{event(1)})
	if _, err := Create(path, Options{}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create on an existing file: %v, want ErrExists", err)
	}
	if _, err := Create(path, Options{Append: true, Force: true}); err == nil {
		t.Fatal("append and force together were accepted")
	}
	// Force replaces; Append adds.
	writeAll(t, path, Options{Force: true}, []*snoopv1.WatchEventsResponse{event(2)})
	writeAll(t, path, Options{Append: true}, []*snoopv1.WatchEventsResponse{event(3)})
	got, err := readAll(t, path)
	if err != nil {
		t.Fatal(err)
	}
	equalStreams(t, got, []*snoopv1.WatchEventsResponse{event(2), event(3)})
}

func TestAppendCutsPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl")
	writeAll(t, path, Options{}, []*snoopv1.WatchEventsResponse{event(1)})
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"event":{"kind":"EVENT_KIND_TRANS`)
	f.Close()
	w := writeAll(t, path, Options{Append: true}, []*snoopv1.WatchEventsResponse{event(2)})
	if w.Repaired() != int64(len(`{"event":{"kind":"EVENT_KIND_TRANS`)) {
		t.Errorf("Repaired = %d", w.Repaired())
	}
	got, err := readAll(t, path)
	if err != nil {
		t.Fatal(err)
	}
	equalStreams(t, got, []*snoopv1.WatchEventsResponse{event(1), event(2)})
}

func TestAppendRefusesGzip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl.gz")
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte("{}\n"))
	zw.Close()
	os.WriteFile(path, b.Bytes(), 0o600)
	if _, err := Create(path, Options{Append: true}); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Fatalf("append to gzip: %v", err)
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.jsonl")
	// Rotations left by an earlier capture move up, as logrotate moves
	// them, and are never overwritten.
	for _, n := range []int{1, 3} {
		if err := os.WriteFile(fmt.Sprintf("%s.%d", path, n), fmt.Appendf(nil, "earlier %d\n", n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var want []*snoopv1.WatchEventsResponse
	for i := range 60 {
		want = append(want, event(i))
	}
	const limit = 1000
	w := writeAll(t, path, Options{RotateSize: limit, FlushSize: 700}, want)
	rot := w.Rotated()
	if len(rot) < 3 {
		t.Fatalf("rotated %d times, want several: %v", len(rot), rot)
	}
	for i, r := range rot {
		if want := fmt.Sprintf("%s.%d", path, len(rot)-i); r != want {
			t.Errorf("rotation %d is %s, want %s", i, r, want)
		}
		fi, err := os.Stat(r)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > limit {
			t.Errorf("%s is %d bytes, over the limit %d", r, fi.Size(), limit)
		}
	}
	for _, n := range []int{1, 3} {
		moved := fmt.Sprintf("%s.%d", path, n+len(rot))
		if b, _ := os.ReadFile(moved); string(b) != fmt.Sprintf("earlier %d\n", n) {
			t.Errorf("the earlier rotation .%d is not in %s: %q", n, moved, b)
		}
	}
	got, err := readAll(t, append(rot, path)...)
	if err != nil {
		t.Fatal(err)
	}
	equalStreams(t, got, want)
}

// TestRotationKeep keeps the newest rotated files and deletes the rest,
// earlier captures' included, as logrotate's rotate N does: what is left
// is the newest events, in order, and FILE.N+1 never exists.
func TestRotationKeep(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.jsonl")
	for _, n := range []int{1, 2, 7} {
		if err := os.WriteFile(fmt.Sprintf("%s.%d", path, n), fmt.Appendf(nil, "earlier %d\n", n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var all []*snoopv1.WatchEventsResponse
	for i := range 60 {
		all = append(all, event(i))
	}
	const keep = 3
	w := writeAll(t, path, Options{RotateSize: 1000, FlushSize: 700, RotateKeep: keep}, all)
	rot := w.Rotated()
	if len(rot) != keep {
		t.Fatalf("rotated files %v, want the %d newest", rot, keep)
	}
	ns, err := Rotations(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ns, []int{1, 2, 3}) {
		t.Fatalf("rotated files left: %v, want 1 to %d", ns, keep)
	}
	if w.Deleted() < 3 {
		t.Errorf("deleted %d, want the 3 earlier files and the oldest of this capture's", w.Deleted())
	}
	got, err := readAll(t, append(rot, path)...)
	if err != nil {
		t.Fatal(err)
	}
	// What is left is the tail of the stream, whole.
	equalStreams(t, got, all[len(all)-len(got):])
}

func TestRotationHugeLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl")
	w := writeAll(t, path, Options{RotateSize: 10}, []*snoopv1.WatchEventsResponse{event(1), event(2)})
	if len(w.Rotated()) != 1 {
		t.Fatalf("rotated %v, want one file per oversized line", w.Rotated())
	}
	got, err := readAll(t, path+".1", path)
	if err != nil {
		t.Fatal(err)
	}
	equalStreams(t, got, []*snoopv1.WatchEventsResponse{event(1), event(2)})
}

func TestWriteLineRejectsNewline(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "c"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.WriteLine([]byte("a\nb")); err == nil {
		t.Error("a line with a newline was accepted")
	}
}

func TestReaderTruncatedLastLine(t *testing.T) {
	var b bytes.Buffer
	for i := range 3 {
		line, _ := jsonLine(event(i))
		b.Write(line)
	}
	full := b.Len()
	line, _ := jsonLine(event(3))
	b.Write(line[:len(line)/2])

	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			input := b.Bytes()
			if gz {
				var z bytes.Buffer
				zw := gzip.NewWriter(&z)
				zw.Write(input)
				zw.Close()
				input = z.Bytes()
			}
			r, err := NewReader("t", bytes.NewReader(input))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				resp, err := r.Next()
				if err != nil || !proto.Equal(resp, event(i)) {
					t.Fatalf("line %d: %v %v", i+1, resp, err)
				}
			}
			if _, err := r.Next(); !errors.Is(err, ErrTruncated) {
				t.Fatalf("truncated line: %v, want ErrTruncated", err)
			}
			if _, err := r.Next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the truncated line: %v, want EOF", err)
			}
		})
	}

	// A gzip stream cut short is a truncation too, after the lines it had.
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(b.Bytes()[:full])
	zw.Close()
	r, err := NewReader("t", bytes.NewReader(z.Bytes()[:z.Len()-6]))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; n < 10; n++ {
		if _, err = r.Next(); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("cut gzip: %v after %d lines, want ErrTruncated", err, n)
	}
}

// jsonLine is r as the Writer writes it: one line of protojson.
func jsonLine(r *snoopv1.WatchEventsResponse) ([]byte, error) {
	b, err := format.JSON(r)
	return append(b, '\n'), err
}

func TestReaderBadInput(t *testing.T) {
	good, _ := jsonLine(event(1))
	tests := []struct {
		name, input, want string
	}{
		{"not json", string(good) + "hello\n" + string(good), "t:2: not a snoop event"},
		{"empty object", "{}\n", "t:1: neither an event nor a notice"},
		{"wrong type", `{"dropped":"x"}` + "\n", "t:1: not a snoop event"},
		{"binary", "\x7fELF\x02\x01\n", "t:1: not a snoop event (snoop.v1.WatchEventsResponse in JSON): binary data, not JSON lines"},
		{"protojson's prefix", `{"event": 5}` + "\n", "t:1: not a snoop event (snoop.v1.WatchEventsResponse in JSON): syntax error (line 1:11): unexpected token 5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := NewReader("t", strings.NewReader(tc.input))
			var err error
			for range 5 {
				if _, err = r.Next(); err != nil {
					break
				}
			}
			if err == nil || errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
			if err != nil && strings.ContainsFunc(err.Error(), func(r rune) bool { return !unicode.IsPrint(r) }) {
				t.Errorf("the error has a byte a terminal would act on: %q", err)
			}
		})
	}
}

func TestReaderSkipsBlankLinesAndUnknownFields(t *testing.T) {
	in := "\n" + `{"event":{"kind":"EVENT_KIND_CONNECTION_OPENED","proxy":"p","future_field":1}}` + "\n\n" +
		`{"history_done":true}` + "\n" + `{"dropped":"3"}`
	r, _ := NewReader("t", strings.NewReader(in))
	a, err := r.Next()
	if err != nil || a.GetEvent().GetProxy() != "p" {
		t.Fatalf("first: %v %v", a, err)
	}
	if h, err := r.Next(); err != nil || !h.GetHistoryDone() {
		t.Fatalf("the end-of-history notice: %v %v", h, err)
	}
	b, err := r.Next()
	if err != nil || b.GetDropped() != 3 {
		t.Fatalf("a last line without newline that parses: %v %v", b, err)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
}

// TestWriteEventSameAsProtojson: lines written by WriteEvent are the
// protojson lines captures always had, so files from any snoopctl read
// the same, and a file mixing old and new lines reads back whole.
func TestWriteEventSameAsProtojson(t *testing.T) {
	dir := t.TempDir()
	var rs []*snoopv1.WatchEventsResponse
	for i := range 300 {
		rs = append(rs, event(i*7919))
	}
	rs = append(rs, &snoopv1.WatchEventsResponse{Dropped: 12}, &snoopv1.WatchEventsResponse{HistoryDone: true})
	fresh := filepath.Join(dir, "new.jsonl")
	writeAll(t, fresh, Options{}, rs)
	var old bytes.Buffer
	for _, r := range rs {
		b, err := format.JSON(r)
		if err != nil {
			t.Fatal(err)
		}
		old.Write(b)
		old.WriteByte('\n')
	}
	got, _ := os.ReadFile(fresh)
	if !bytes.Equal(got, old.Bytes()) {
		t.Fatal("WriteEvent's lines differ from protojson's")
	}
	// Old lines, then new ones appended.
	mixed := filepath.Join(dir, "mixed.jsonl")
	if err := os.WriteFile(mixed, old.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	writeAll(t, mixed, Options{Append: true}, rs)
	back, err := readAll(t, mixed)
	if err != nil || len(back) != 2*len(rs) {
		t.Fatalf("read %d of %d: %v", len(back), 2*len(rs), err)
	}
	for i, r := range back {
		if !proto.Equal(r, rs[i%len(rs)]) {
			t.Fatalf("line %d: %v", i+1, r)
		}
	}
}

// BenchmarkWriteEventProtojson is the writer before: each line encoded by
// protojson, compacted, then copied into the buffer.
func BenchmarkWriteEventProtojson(b *testing.B) {
	benchWrite(b, func(w *Writer, r *snoopv1.WatchEventsResponse) error {
		line, err := format.JSON(r)
		if err != nil {
			return err
		}
		return w.WriteLine(line)
	})
}

// BenchmarkWriteEvent is the writer now: encoded straight into the buffer.
func BenchmarkWriteEvent(b *testing.B) {
	benchWrite(b, (*Writer).WriteEvent)
}

func benchWrite(b *testing.B, write func(*Writer, *snoopv1.WatchEventsResponse) error) {
	w, err := Create(filepath.Join(b.TempDir(), "bench.jsonl"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	r := event(123456)
	b.ReportAllocs()
	for range b.N {
		if err := write(w, r); err != nil {
			b.Fatal(err)
		}
	}
}
