package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// stateFileName is the file in the state dir that holds the proxies. Its
// form is the API's own: an ApplyProxiesRequest in protojson, so an
// operator can read it, and feed it to `snoopctl apply` or `--config`;
// beside "proxies" it may hold "bound_ports" (see boundPortsKey).
const stateFileName = "proxies.json"

// lockFileName is the file in the state dir a daemon holds an flock on
// for as long as it runs, with its pid in it: one daemon per state dir.
const lockFileName = "snoopd.lock"

// boundPortsKey is the one key of the state file that is not the API's:
// the ports that proxies declared on port 0 were bound to, by name, so a
// restart can give them the same port again. Files written before it
// existed lack it; readers of proxy sets (--config, snoopctl apply) skip
// it, so the state file stays a valid declaration.
const boundPortsKey = "bound_ports"

// ErrNotSaved is wrapped when a change was refused because the state file
// could not be written; the change was rolled back.
var ErrNotSaved = errors.New("the change was refused because it could not be saved")

// ErrStateDirLocked is wrapped when another process holds the state dir.
var ErrStateDirLocked = errors.New("in use by another snoopd")

// writeStateFile is the state file's writer, a variable so tests can make
// it fail the way a full disk or a failing device does (also as root,
// which a read-only directory does not stop).
var writeStateFile = writeAtomic

// stateFile saves the proxies atomically (a temporary file, fsync, rename,
// fsync of the directory: a crash leaves the old file or the new one,
// never a mix) and commits changes in groups.
//
// Group commit: a change is made in memory and given a ticket under the
// registry lock (registry.mu), so a snapshot, also taken under that lock, holds
// exactly the changes of the tickets issued before it. One caller at a
// time, the leader, takes a snapshot and writes it, while the changes
// that arrive meanwhile queue; when its write ends, every ticket the
// snapshot covered is settled at once, and the next waiting caller leads
// the next group. So N concurrent changes cost one write and one fsync,
// and each call returns only when its own change is durable. The
// snapshot is taken by the leader, under the write token, so an older
// snapshot can never be written after a newer one.
//
// When a write fails, the leader runs the undo of every change in the
// group, still holding the write token, before the next snapshot can be
// taken: memory goes back to what the disk holds, and every caller of
// the group gets the error.
type stateFile struct {
	dir, path string
	lock      *os.File // flocked for the daemon's life

	mu      sync.Mutex
	cond    *sync.Cond
	issued  uint64            // tickets handed out
	settled uint64            // tickets whose group was written or failed
	writing bool              // a leader holds the write token
	undo    map[uint64]func() // by ticket, until settled
	failed  map[uint64]error  // settled tickets whose write failed, until collected
}

// openState locks the state dir (creating it, 0700, if needed), removes
// temporary files a killed daemon left, and reads the saved proxies and
// the ports they were bound to. A file that does not parse, or holds an
// invalid or duplicate proxy, is an error that names the file and the
// problem; it is never overwritten silently.
func openState(dir string, log *slog.Logger, held *StateLock) (*stateFile, []*snoopv1.ProxySpec, map[string]int, error) {
	if held == nil || held.dir != dir {
		var err error
		if held, err = LockStateDir(dir); err != nil {
			return nil, nil, nil, err
		}
	}
	lock := held.f
	st := &stateFile{dir: dir, path: filepath.Join(dir, stateFileName), lock: lock, undo: map[uint64]func(){}, failed: map[uint64]error{}}
	st.cond = sync.NewCond(&st.mu)
	// Only now, holding the lock, are temporary files surely nobody's.
	if tmps, _ := filepath.Glob(filepath.Join(dir, stateFileName+".tmp*")); len(tmps) > 0 {
		for _, tmp := range tmps {
			if err := os.Remove(tmp); err != nil {
				log.Warn("could not remove a leftover temporary state file", "file", tmp, "err", err)
				continue
			}
			log.Info("removed a temporary state file left by an interrupted save", "file", tmp)
		}
	}
	specs, ports, err := readProxySet(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil, nil, nil
	}
	if err != nil {
		st.close()
		return nil, nil, nil, fmt.Errorf("state file is damaged, so snoopd will not start (it never overwrites it; fix it or move it away): %w", err)
	}
	return st, specs, ports, nil
}

// StateLock is a state dir's lock, held for a daemon's life. snoopd takes
// it before anything else, so that a second daemon on the same dir fails
// at once, before it has opened a socket or started an event loop (whose
// undoing, on a busy machine, once made that refusal take half a minute).
type StateLock struct {
	dir string
	f   *os.File
}

// LockStateDir makes dir if it is missing and takes its lock without
// waiting; if another process holds it, the error names the dir and that
// process's pid.
func LockStateDir(dir string) (*StateLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	f, err := lockStateDir(dir)
	if err != nil {
		return nil, err
	}
	return &StateLock{dir: dir, f: f}, nil
}

// Release lets the lock go; a nil lock, or one released, is left alone.
func (l *StateLock) Release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// lockStateDir takes the state dir's lock without waiting, and writes
// this process's pid into the lock file. If another process holds it, the
// error names the dir and that process's pid.
func lockStateDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: lock: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := strings.TrimSpace(string(b))
			if _, perr := strconv.Atoi(holder); perr != nil {
				holder = "unknown"
			}
			return nil, fmt.Errorf("state dir %s is %w, pid %s (one snoopd per state dir; lock file %s)", dir, ErrStateDirLocked, holder, path)
		}
		return nil, fmt.Errorf("state dir %s: lock %s: %w", dir, path, err)
	}
	// The pid is for the message above; the flock is what excludes.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// close releases the state dir's lock.
func (s *stateFile) close() {
	if s.lock != nil {
		s.lock.Close() // closing the last descriptor releases the flock
		s.lock = nil
	}
}

// ReadProxySet reads a declarative proxy set in the API's JSON form: an
// ApplyProxiesRequest ({"proxies": [...]}), such as a state file. Every
// entry is validated; an error names the file, the entry and the reason.
func ReadProxySet(path string) ([]*snoopv1.ProxySpec, error) {
	specs, _, err := readProxySet(path)
	return specs, err
}

// readProxySet is ReadProxySet that also returns a state file's bound
// ports (nil when it has none).
func readProxySet(path string) ([]*snoopv1.ProxySpec, map[string]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	b, ports, err := splitBoundPorts(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	var req snoopv1.ApplyProxiesRequest
	if err := protojson.Unmarshal(b, &req); err != nil {
		return nil, nil, fmt.Errorf("%s: not a proxy set in the API's JSON form ({\"proxies\": [{\"name\": ..., \"listen\": ..., \"server\": ...}]}): %w", path, err)
	}
	seen := map[string]bool{}
	for i, spec := range req.GetProxies() {
		if _, _, err := normalize(spec); err != nil {
			return nil, nil, fmt.Errorf("%s: entry %d (%s): %w", path, i, quote(spec.GetName()), err)
		}
		if seen[spec.GetName()] {
			return nil, nil, fmt.Errorf("%s: entry %d: proxy %s is declared twice", path, i, quote(spec.GetName()))
		}
		seen[spec.GetName()] = true
	}
	return req.GetProxies(), ports, nil
}

// splitBoundPorts takes the bound_ports key out of a JSON object, if it
// has one, and returns the rest. Input that is not a JSON object is
// returned as it is, for protojson to explain what is wrong with it.
func splitBoundPorts(b []byte) ([]byte, map[string]int, error) {
	var top map[string]json.RawMessage
	if !bytes.Contains(b, []byte(boundPortsKey)) || json.Unmarshal(b, &top) != nil {
		return b, nil, nil
	}
	raw, ok := top[boundPortsKey]
	if !ok {
		return b, nil, nil
	}
	var ports map[string]int
	if err := json.Unmarshal(raw, &ports); err != nil {
		return nil, nil, fmt.Errorf("%q: want an object of proxy names and ports: %w", boundPortsKey, err)
	}
	for name, port := range ports {
		if port < 1 || port > 65535 {
			return nil, nil, fmt.Errorf("%q: proxy %s: port %d is not a port", boundPortsKey, quote(name), port)
		}
	}
	delete(top, boundPortsKey)
	rest, err := json.Marshal(top)
	if err != nil {
		return nil, nil, err
	}
	return rest, ports, nil
}

// ticket records a change just made in memory and returns its ticket
// for persist, or 0 without a state dir. undo, if not nil, puts memory
// back as it was should the change not be saved; it runs on another
// goroutine and takes the registry's lock itself, and must only touch
// the registry (stopping proxies and the like is the caller's business
// once persist has failed).
func (h held) ticket(undo func()) uint64 {
	s := h.r.state
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issued++
	if undo != nil {
		s.undo[s.issued] = undo
	}
	return s.issued
}

// persist returns once the change of ticket t is durable, or, if it could
// not be saved, after it was undone in memory, with an error wrapping
// ErrNotSaved that names the state file and the system's error.
func (r *registry) persist(t uint64) error {
	s := r.state
	if s == nil || t == 0 {
		return nil
	}
	s.mu.Lock()
	for s.settled < t && s.writing {
		s.cond.Wait()
	}
	if s.settled >= t {
		err := s.failed[t]
		delete(s.failed, t)
		s.mu.Unlock()
		return err
	}
	// Lead a group: everything issued up to the snapshot.
	s.writing = true
	from := s.settled
	s.mu.Unlock()

	b, upTo := r.snapshot()
	err := writeStateFile(s.path, b)

	s.mu.Lock()
	var undos []func()
	for i := from + 1; i <= upTo; i++ {
		if err != nil && s.undo[i] != nil {
			undos = append(undos, s.undo[i])
		}
		delete(s.undo, i)
	}
	s.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("%w: state file %s: %w", ErrNotSaved, s.path, err)
		r.log.Error("could not save the proxies; the changes waiting for this save are refused and rolled back", "file", s.path, "changes", upTo-from, "err", err)
		// Newest first, though the changes of one group touch different
		// proxies (each holds its proxy's reservation).
		for i := len(undos) - 1; i >= 0; i-- {
			undos[i]()
		}
	}
	s.mu.Lock()
	if err != nil {
		for i := from + 1; i <= upTo; i++ {
			s.failed[i] = err
		}
	}
	s.settled, s.writing = upTo, false
	s.cond.Broadcast()
	myErr := s.failed[t]
	delete(s.failed, t)
	s.mu.Unlock()
	return myErr
}

// save makes the current registry durable, for the saves that record no
// change of their own (at start after --config, at shutdown).
func (r *registry) save() error {
	if r.state == nil {
		return nil
	}
	var t uint64
	r.locked(func(h held) error { t = h.ticket(nil); return nil })
	return r.persist(t)
}

// snapshot renders the registry as the state file (all proxies but
// ephemeral ones, those being created and those being deleted), and
// returns the last ticket it covers. Under the registry lock it only
// walks the registry in name order (registry.order, kept sorted),
// rendering the entries whose spec or port changed since the last
// snapshot (each entry keeps its JSON); the file is put together after
// the lock is let go, from those pieces, which are never changed, only
// replaced. So a snapshot of many proxies is mostly copying, and creates
// wait for little of it.
func (r *registry) snapshot() ([]byte, uint64) {
	var upTo uint64
	var specs, ports [][]byte
	size := 0
	r.locked(func(h held) error {
		r.state.mu.Lock()
		upTo = r.state.issued
		r.state.mu.Unlock()
		specs = make([][]byte, 0, len(r.order))
		for _, n := range r.order {
			e := n.e
			if e.placeholder || e.ephemeral || e.removing || e.spec == nil {
				continue
			}
			if e.json == nil || e.jsonOf != e.spec {
				e.json, _ = protojson.MarshalOptions{UseProtoNames: true}.Marshal(e.spec)
				e.jsonOf = e.spec
			}
			specs = append(specs, e.json)
			size += len(e.json) + 6
			if port := h.boundPort(e); port != 0 {
				if e.portJSON == nil || e.portOf != port {
					q, _ := json.Marshal(n.name)
					e.portJSON = append(q, (": " + strconv.Itoa(port))...)
					e.portOf = port
				}
				ports = append(ports, e.portJSON)
				size += len(e.portJSON) + 2
			}
		}
		return nil
	})

	buf := bytes.NewBuffer(make([]byte, 0, size+64+len(boundPortsKey)))
	buf.WriteString("{\n  \"proxies\": [")
	for i, b := range specs {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n    ")
		buf.Write(b)
	}
	buf.WriteString("\n  ]")
	if len(ports) > 0 {
		buf.WriteString(",\n  \"" + boundPortsKey + "\": {")
		for i, b := range ports {
			if i > 0 {
				buf.WriteString(", ")
			}
			buf.Write(b)
		}
		buf.WriteString("}")
	}
	buf.WriteString("\n}\n")
	return buf.Bytes(), upTo
}

// boundPort is the port a proxy declared on TCP port 0 got, 0 if none.
func (h held) boundPort(e *entry) int {
	listen, _ := h.addrsOf(e)
	if listen.Network() != distcache.NetworkTCP || listen.Port() != 0 || e.p == nil {
		return 0
	}
	return h.boundAddr(e).Port()
}

// writeAtomic writes b to path through a temporary file in the same
// directory: write, fsync, rename, fsync of the directory.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	// The file's errors name the operation and the file already
	// ("write /state/proxies.json.tmp123: no space left on device").
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable only once the directory is. If this fails
	// the new file is in place but perhaps not on the disk; the change is
	// refused and undone, and the next save writes the registry again.
	df, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer df.Close()
	if err := df.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
