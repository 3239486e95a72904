package capture

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// ErrExists is wrapped by Create when the file exists and neither Append
// nor Force was given.
var ErrExists = errors.New("file exists")

// DefaultFlushSize is how many bytes of whole lines the Writer collects
// before it writes them.
const DefaultFlushSize = 64 << 10

// MinRotateSize is the smallest rotation size a user may ask for: below
// the Writer's batch, a rotation would follow nearly every write, a file
// per few events, each one renaming all the others.
const MinRotateSize = DefaultFlushSize

// DefaultRotateKeep is how many rotated files are kept when nobody says:
// four, as the stock logrotate.conf of Debian and Ubuntu does.
const DefaultRotateKeep = 4

// Options say how Create treats an existing file and when to rotate.
type Options struct {
	// Append adds to an existing file. A partial last line left by a
	// crash is cut off first (Writer.Repaired says how many bytes), so
	// that the file stays readable line by line.
	Append bool
	// Force replaces an existing file.
	Force bool
	// RotateSize starts a new file once the current one would grow past
	// this many bytes; 0 never rotates. A single line larger than the
	// limit gets a file of its own.
	RotateSize int64
	// RotateKeep keeps at most this many rotated files (FILE.1 to
	// FILE.N); a rotation deletes the ones it would push past N,
	// earlier captures' included, as logrotate's rotate N does. 0 keeps
	// every one.
	RotateKeep int
	// FlushSize is the Writer's batch size; 0 means DefaultFlushSize.
	FlushSize int
}

// Writer writes a capture file line by line. It is not safe for
// concurrent use.
type Writer struct {
	path      string
	opts      Options
	f         *os.File
	size      int64  // bytes of whole lines in f
	buf       []byte // whole lines not yet written
	lines     int64
	rotations int
	deleted   int // rotated files deleted to keep RotateKeep
	repaired  int64
	err       error // the first write error; the Writer is then unusable
}

// Create opens path for a capture. Without Append or Force it refuses an
// existing file with an error wrapping ErrExists.
func Create(path string, o Options) (*Writer, error) {
	if o.Append && o.Force {
		return nil, errors.New("append and force exclude each other")
	}
	if o.RotateSize < 0 {
		return nil, fmt.Errorf("rotate size %d is negative", o.RotateSize)
	}
	if o.RotateKeep < 0 {
		return nil, fmt.Errorf("rotated files to keep %d is negative", o.RotateKeep)
	}
	if o.FlushSize <= 0 {
		o.FlushSize = DefaultFlushSize
	}
	w := &Writer{path: path, opts: o}
	flags := os.O_WRONLY | os.O_CREATE
	switch {
	case o.Append:
		// Read access too: repair looks at the end of the file.
		flags = os.O_RDWR | os.O_CREATE | os.O_APPEND
	case o.Force:
		flags |= os.O_TRUNC
	default:
		flags |= os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%s: %w", path, ErrExists)
		}
		return nil, err
	}
	w.f = f
	if o.Append {
		if err := w.repair(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return w, nil
}

// repair prepares an existing file for appending: it refuses a gzip file
// and cuts off a partial last line.
func (w *Writer) repair() error {
	fi, err := w.f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	head := make([]byte, 2)
	if _, err := w.f.ReadAt(head, 0); err == nil && bytes.Equal(head, gzipMagic) {
		return fmt.Errorf("%s is gzip-compressed; appending would corrupt it (save to a new file)", w.path)
	}
	// Find the end of the last whole line, reading backwards in chunks;
	// the loop ends at the start of the file at the latest.
	end := size
	chunk := make([]byte, 64<<10)
	for end > 0 {
		n := min(int64(len(chunk)), end)
		if _, err := w.f.ReadAt(chunk[:n], end-n); err != nil {
			return fmt.Errorf("read %s: %w", w.path, err)
		}
		if i := bytes.LastIndexByte(chunk[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
	}
	if end < size {
		if err := w.f.Truncate(end); err != nil {
			return fmt.Errorf("cut the partial last line of %s: %w", w.path, err)
		}
		w.repaired = size - end
	}
	w.size = end
	return nil
}

// WriteEvent writes one stream response as a line, encoded straight into
// the Writer's buffer (format.AppendResponseLine: the same bytes as
// protojson, without allocating).
func (w *Writer) WriteEvent(r *snoopv1.WatchEventsResponse) error {
	if w.err != nil {
		return w.err
	}
	start := len(w.buf)
	b, err := format.AppendResponseLine(w.buf, r)
	if err != nil {
		w.buf = w.buf[:start]
		return err
	}
	if bytes.IndexByte(b[start:], '\n') >= 0 {
		w.buf = b[:start]
		return errors.New("a capture line must not contain a newline")
	}
	w.buf = append(b, '\n')
	w.lines++
	if len(w.buf) >= w.opts.FlushSize {
		return w.Flush()
	}
	return nil
}

// WriteLine adds one line (without its newline) to the file. Lines are
// collected and written in batches; Flush writes them at once.
func (w *Writer) WriteLine(line []byte) error {
	if w.err != nil {
		return w.err
	}
	if bytes.IndexByte(line, '\n') >= 0 {
		return errors.New("a capture line must not contain a newline")
	}
	w.buf = append(w.buf, line...)
	w.buf = append(w.buf, '\n')
	w.lines++
	if len(w.buf) >= w.opts.FlushSize {
		return w.Flush()
	}
	return nil
}

// Flush writes the collected lines, rotating where the size limit falls.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	// Each round writes at least one line, or rotates a non-empty file
	// (after which the next round writes), so the loop ends after at most
	// two rounds per buffered line.
	for len(w.buf) > 0 {
		limit := w.opts.RotateSize
		if limit == 0 || w.size+int64(len(w.buf)) <= limit {
			if err := w.write(w.buf); err != nil {
				return err
			}
			w.buf = w.buf[:0]
			break
		}
		cut := fitLines(w.buf, limit-w.size)
		if cut == 0 {
			if w.size > 0 {
				if err := w.rotate(); err != nil {
					return err
				}
				continue
			}
			// A line longer than the limit gets a file of its own.
			cut = bytes.IndexByte(w.buf, '\n') + 1
		}
		if err := w.write(w.buf[:cut]); err != nil {
			return err
		}
		w.buf = w.buf[cut:]
	}
	return nil
}

// fitLines returns the length of the longest run of whole lines at the
// start of buf that is at most room bytes.
func fitLines(buf []byte, room int64) int {
	if room <= 0 {
		return 0
	}
	if room >= int64(len(buf)) {
		return len(buf)
	}
	return bytes.LastIndexByte(buf[:room], '\n') + 1
}

// write hands whole lines to the file in one call; if the file takes only
// part of them (a full disk), it is cut back to its last whole line.
func (w *Writer) write(p []byte) error {
	n, err := w.f.Write(p)
	if err != nil {
		if n > 0 {
			if terr := w.f.Truncate(w.size); terr != nil {
				err = fmt.Errorf("%w (and cutting the partial line failed: %v)", err, terr)
			}
		}
		w.err = fmt.Errorf("write %s: %w", w.f.Name(), err)
		return w.err
	}
	w.size += int64(n)
	return nil
}

// rotate rotates as logrotate does: every FILE.N becomes FILE.N+1 (the
// highest first, so none is overwritten), the current file becomes FILE.1,
// and an empty FILE is started. FILE.1 is always the newest rotated file.
func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		w.err = fmt.Errorf("close %s: %w", w.path, err)
		return w.err
	}
	n, err := dropRotations(w.path, w.opts.RotateKeep)
	w.deleted += n
	if err != nil {
		w.err = err
		return err
	}
	if err := shiftRotations(w.path); err != nil {
		w.err = err
		return err
	}
	first := w.path + ".1"
	if err := os.Rename(w.path, first); err != nil {
		w.err = fmt.Errorf("rotate %s: %w", w.path, err)
		return w.err
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		w.err = fmt.Errorf("start a new %s after rotating: %w", w.path, err)
		return w.err
	}
	w.f, w.size = f, 0
	w.rotations++
	return nil
}

// Rotations returns path's rotated files FILE.N, by N.
func Rotations(path string) ([]int, error) {
	matches, err := filepath.Glob(globEscape(path) + ".*")
	if err != nil {
		return nil, fmt.Errorf("list rotations of %s: %w", path, err)
	}
	var ns []int
	for _, m := range matches {
		suffix := strings.TrimPrefix(m, path+".")
		if n, err := strconv.Atoi(suffix); err == nil && n > 0 && strconv.Itoa(n) == suffix {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	return ns, nil
}

// dropRotations deletes the rotated files FILE.N with N >= keep, which
// the next shift would push past keep, and returns how many it deleted.
// keep 0 deletes none.
func dropRotations(path string, keep int) (int, error) {
	if keep == 0 {
		return 0, nil
	}
	ns, err := Rotations(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range ns {
		if k < keep {
			continue
		}
		name := fmt.Sprintf("%s.%d", path, k)
		if err := os.Remove(name); err != nil {
			return n, fmt.Errorf("rotate: delete %s, the oldest beyond the %d to keep: %w", name, keep, err)
		}
		n++
	}
	return n, nil
}

// shiftRotations renames every FILE.N to FILE.N+1, the highest first.
func shiftRotations(path string) error {
	ns, err := Rotations(path)
	if err != nil {
		return err
	}
	for i := len(ns) - 1; i >= 0; i-- {
		from, to := fmt.Sprintf("%s.%d", path, ns[i]), fmt.Sprintf("%s.%d", path, ns[i]+1)
		if _, err := os.Lstat(to); err == nil {
			return fmt.Errorf("rotate %s: %s is in the way", from, to)
		}
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("rotate %s: %w", from, err)
		}
	}
	return nil
}

// globEscape quotes the pattern characters of a literal path.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Close writes what is left, syncs the file to disk and closes it.
func (w *Writer) Close() error {
	ferr := w.Flush()
	serr := w.f.Sync()
	cerr := w.f.Close()
	if ferr != nil {
		return ferr
	}
	if serr != nil && !errors.Is(serr, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", w.path, serr)
	}
	if cerr != nil {
		return fmt.Errorf("close %s: %w", w.path, cerr)
	}
	return nil
}

// Lines is the number of lines accepted so far.
func (w *Writer) Lines() int64 { return w.lines }

// Size is the current file's size including the lines not yet written.
func (w *Writer) Size() int64 { return w.size + int64(len(w.buf)) }

// Rotated lists the files this writer rotated away that are still
// there, oldest first: after k rotations FILE.k ... FILE.1, or only up to
// FILE.RotateKeep (earlier captures' rotations are above them).
func (w *Writer) Rotated() []string {
	n := w.rotations
	if k := w.opts.RotateKeep; k > 0 {
		n = min(n, k)
	}
	var out []string
	for ; n >= 1; n-- {
		out = append(out, fmt.Sprintf("%s.%d", w.path, n))
	}
	return out
}

// Deleted is the number of rotated files this writer deleted to keep
// RotateKeep of them.
func (w *Writer) Deleted() int { return w.deleted }

// Repaired is the number of bytes of a partial last line that Append cut
// off an existing file.
func (w *Writer) Repaired() int64 { return w.repaired }

var _ io.Closer = (*Writer)(nil)
