package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// stateFileName is the file in the state dir that holds the proxies. Its
// form is the API's own: an ApplyProxiesRequest in protojson, so an
// operator can read it, and feed it to `snoopctl apply` or `--config`.
const stateFileName = "proxies.json"

// stateFile saves the proxies atomically: a temporary file, fsync,
// rename, fsync of the directory. A crash leaves the old file or the new
// one, never a mix.
type stateFile struct {
	path string
	mu   sync.Mutex // one save at a time
}

// openState reads the state dir, creating it (0700) if needed. A file that
// does not parse, or holds an invalid or duplicate proxy, is an error that
// names the file and the problem; it is never overwritten silently.
func openState(dir string) (*stateFile, []*snoopv1.ProxySpec, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	st := &stateFile{path: filepath.Join(dir, stateFileName)}
	specs, err := ReadProxySet(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("state file is damaged, so snoopd will not start (it never overwrites it; fix it or move it away): %w", err)
	}
	return st, specs, nil
}

// ReadProxySet reads a declarative proxy set in the API's JSON form: an
// ApplyProxiesRequest ({"proxies": [...]}). Every entry is validated; an
// error names the file, the entry and the reason.
func ReadProxySet(path string) ([]*snoopv1.ProxySpec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var req snoopv1.ApplyProxiesRequest
	if err := protojson.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("%s: not a proxy set in the API's JSON form ({\"proxies\": [{\"name\": ..., \"listen\": ..., \"server\": ...}]}): %w", path, err)
	}
	seen := map[string]bool{}
	for i, spec := range req.GetProxies() {
		if _, _, err := normalize(spec); err != nil {
			return nil, fmt.Errorf("%s: entry %d (%q): %w", path, i, spec.GetName(), err)
		}
		if seen[spec.GetName()] {
			return nil, fmt.Errorf("%s: entry %d: proxy %q is declared twice", path, i, spec.GetName())
		}
		seen[spec.GetName()] = true
	}
	return req.GetProxies(), nil
}

// save writes the current proxies (all but ephemeral ones) to the state
// file, if there is one.
func (d *Daemon) save() error {
	if d.state == nil {
		return nil
	}
	d.mu.Lock()
	req := &snoopv1.ApplyProxiesRequest{}
	for _, e := range d.proxies {
		if !e.placeholder && !e.ephemeral && e.spec != nil {
			req.Proxies = append(req.Proxies, e.spec)
		}
	}
	d.mu.Unlock()
	sort.Slice(req.Proxies, func(i, j int) bool { return req.Proxies[i].GetName() < req.Proxies[j].GetName() })
	b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(req)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return d.state.write(append(b, '\n'))
}

// saveLogged saves and logs a failure: the change it records has already
// happened and stays in force for this process.
func (d *Daemon) saveLogged() {
	if err := d.save(); err != nil {
		d.log.Error("could not save proxies; they will not survive a restart until a later save succeeds", "err", err)
	}
}

func (s *stateFile) write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, stateFileName+".tmp*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("state: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("state: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	// The rename is durable only once the directory is.
	if df, err := os.Open(dir); err == nil {
		df.Sync()
		df.Close()
	}
	return nil
}
