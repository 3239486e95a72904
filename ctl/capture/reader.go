package capture

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// ErrTruncated is wrapped by Reader.Next when the input ends in the middle
// of a line: the capture was cut short. Every whole line before it has
// been returned.
var ErrTruncated = errors.New("truncated")

// MaxLine bounds the length of one line, so that a file that is not a
// capture (one huge line) cannot take all memory. An event with the
// largest captured data (32 KiB, base64 in JSON) is far below it.
const MaxLine = 16 << 20

// gzipMagic starts every gzip stream.
var gzipMagic = []byte{0x1f, 0x8b}

// decodeOptions accept files from newer daemons: fields this snoopctl does
// not know are skipped, not an error.
var decodeOptions = protojson.UnmarshalOptions{DiscardUnknown: true}

// Reader reads a capture file line by line.
type Reader struct {
	name   string
	br     *bufio.Reader
	closer io.Closer // the file, when Open opened one
	gz     *gzip.Reader
	line   int
	done   bool
}

// Open opens a capture file by name; "-" reads stdin. Gzip-compressed
// input is recognised by its first bytes.
func Open(name string, stdin io.Reader) (*Reader, error) {
	if name == "-" {
		return NewReader("stdin", stdin)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(name, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = f
	return r, nil
}

// NewReader reads a capture from r; name is used in errors.
func NewReader(name string, r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	rd := &Reader{name: name, br: br}
	head, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if bytes.Equal(head, gzipMagic) {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: not a readable gzip file: %w", name, err)
		}
		rd.gz = gz
		rd.br = bufio.NewReaderSize(gz, 64<<10)
	}
	return rd, nil
}

// Name is the name the Reader reports in errors.
func (r *Reader) Name() string { return r.name }

// Line is the number of the line Next returned last.
func (r *Reader) Line() int { return r.line }

// Next returns the next event or drop notice. At the end it returns
// io.EOF; for a last line cut short, an error wrapping ErrTruncated
// (a warning: the capture is fine up to there); for a line that is not a
// stream response, an error naming the file and line.
func (r *Reader) Next() (*snoopv1.WatchEventsResponse, error) {
	l, err := r.nextLine(false) // decoded before the buffer moves on
	if err != nil {
		return nil, err
	}
	return l.Decode()
}

// Line is one undecoded line of a capture, for readers that decode lines
// on several goroutines (decoding is most of a read's cost).
type Line struct {
	// Data is the line without its newline; it is the caller's.
	Data     []byte
	name     string
	num      int
	complete bool // it ended with a newline
}

// NextLine returns the next non-blank line without decoding it; Decode
// gives what Next would have. At the end it returns io.EOF.
func (r *Reader) NextLine() (Line, error) { return r.nextLine(true) }

// nextLine is NextLine; clone copies the line out of the read buffer,
// which the next read overwrites.
func (r *Reader) nextLine(clone bool) (Line, error) {
	// Each round consumes one line of a finite input (blank lines are
	// skipped), so the loop ends at the input's end.
	for !r.done {
		line, err := r.readLine()
		complete := err == nil
		if err != nil {
			r.done = true
			switch {
			case errors.Is(err, io.EOF) && len(line) == 0:
				return Line{}, io.EOF
			case errors.Is(err, io.EOF):
				// The last line has no newline. A hand-made file may
				// lack it; a capture cut while writing ends mid-line.
			case errors.Is(err, io.ErrUnexpectedEOF) && r.gz != nil:
				return Line{}, fmt.Errorf("%s: %w: the compressed data ends early, after line %d", r.name, ErrTruncated, r.line)
			default:
				return Line{}, fmt.Errorf("read %s: %w", r.name, err)
			}
		}
		r.line++
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if clone {
			line = bytes.Clone(line)
		}
		return Line{Data: line, name: r.name, num: r.line, complete: complete}, nil
	}
	return Line{}, io.EOF
}

// Num is the line's number in its file.
func (l Line) Num() int { return l.num }

// Decode parses the line as Next does, with Next's errors.
func (l Line) Decode() (*snoopv1.WatchEventsResponse, error) {
	resp := &snoopv1.WatchEventsResponse{}
	if err := decodeOptions.Unmarshal(l.Data, resp); err != nil {
		if !l.complete {
			return nil, fmt.Errorf("%s: %w: the last line (%d bytes, line %d) is cut short and was skipped", l.name, ErrTruncated, len(l.Data), l.num)
		}
		return nil, fmt.Errorf("%s:%d: not a snoop event (snoop.v1.WatchEventsResponse in JSON): %s", l.name, l.num, decodeError(l.Data, err))
	}
	if resp.GetEvent() == nil && resp.GetDropped() == 0 && !resp.GetHistoryDone() {
		return nil, fmt.Errorf("%s:%d: neither an event nor a notice (dropped, history_done)", l.name, l.num)
	}
	return resp, nil
}

// readLine returns the next line without its newline. At the end of the
// input it returns what is left with io.EOF (or the gzip error).
func (r *Reader) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLine {
			return nil, fmt.Errorf("line %d is longer than %d bytes: not a capture file", r.line+1, MaxLine)
		}
		switch {
		case err == nil:
			if line == nil {
				return bytes.TrimSuffix(chunk, []byte("\n")), nil
			}
			return append(line, chunk[:len(chunk)-1]...), nil
		case errors.Is(err, bufio.ErrBufferFull):
			line = append(line, chunk...)
		default:
			return append(line, chunk...), err
		}
	}
}

// Close closes the file Open opened.
func (r *Reader) Close() error {
	var err error
	if r.gz != nil {
		err = r.gz.Close()
	}
	if r.closer != nil {
		if cerr := r.closer.Close(); cerr != nil {
			err = cerr
		}
	}
	return err
}

// Decode parses one capture line.
func Decode(line []byte) (*snoopv1.WatchEventsResponse, error) {
	resp := &snoopv1.WatchEventsResponse{}
	if err := decodeOptions.Unmarshal(line, resp); err != nil {
		return nil, fmt.Errorf("not a snoop event: %s", decodeError(line, err))
	}
	return resp, nil
}

// decodeError says why line is not an event, in printable text: binary
// data is called that, and protojson's message loses its "proto:" prefix
// (written with a non-breaking space) and has any raw byte it quotes
// escaped, so that a terminal never gets a control byte from a file.
func decodeError(line []byte, err error) string {
	if !utf8.Valid(line) || bytes.ContainsFunc(line, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
		return "binary data, not JSON lines (is this a file snoopctl save wrote?)"
	}
	msg := strings.TrimLeftFunc(strings.TrimPrefix(err.Error(), "proto:"), unicode.IsSpace)
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, msg)
}
