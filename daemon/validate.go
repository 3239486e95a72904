package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	textclip "github.com/snoopd/snoopd/internal/clip"
	"github.com/snoopd/snoopd/proxy"
)

// maxQuoted is how many bytes of a name or value an error message quotes;
// the rest is counted, not echoed, so a 3 MiB name makes a short error.
const maxQuoted = 64

// clip cuts s to maxQuoted bytes (on a character boundary), saying how
// long it was.
func clip(s string) string { return textclip.Quote(s, maxQuoted) }

// quote is %q of a name or value, clipped.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(clip(s))
}

// validate is the one validator of a spec a request declares: create,
// update (the merged spec) and apply all call it, so they accept and
// refuse the same things. It is normalize plus the rules only new input
// must follow: a state file written by an older snoopd may hold a proxy
// that breaks them, and that proxy comes back failed with the reason
// (see restoreAll) rather than stopping the start-up.
func validate(spec *snoopv1.ProxySpec) (*snoopv1.ProxySpec, proxy.Config, error) {
	// Checked before anything quotes the name, so that no message
	// echoes a huge one.
	if n := len(spec.GetName()); n > 64 {
		return nil, proxy.Config{}, &FieldError{Field: "name", Reason: fmt.Sprintf("%s: a name is 1 to 64 characters", quote(spec.GetName()))}
	}
	norm, cfg, err := normalize(spec)
	if err != nil {
		return nil, proxy.Config{}, err
	}
	if err := checkAbsolute(cfg); err != nil {
		return nil, proxy.Config{}, err
	}
	return norm, cfg, nil
}

// checkAbsolute refuses relative unix socket paths: the daemon would
// resolve them against its working directory, which the operator does
// not see and a service manager may change, and save them so.
func checkAbsolute(cfg proxy.Config) error {
	for _, f := range []struct {
		field string
		a     distcache.Addr
	}{{"listen", cfg.Listen}, {"server", cfg.Server}} {
		if f.a.Network() != distcache.NetworkUnix {
			continue
		}
		p := f.a.Path()
		if strings.HasPrefix(p, "/") || strings.HasPrefix(p, "@") {
			continue
		}
		return &FieldError{Field: f.field, Reason: fmt.Sprintf("unix socket path %s is relative; snoopd needs an absolute path (example: UNIX:/run/snoopd/%s)", quote(p), clip(lastElem(p)))}
	}
	return nil
}

func lastElem(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	if p == "" || p == "." || p == ".." {
		return "dc.sock"
	}
	return p
}

// listenClash reports whether binding a would take b (or the other way
// round): the same unix path, or the same TCP port where the hosts are
// equal or either is a wildcard, which the kernel refuses to share.
func listenClash(a, b distcache.Addr) bool {
	if a.Network() != b.Network() || a.IsZero() || b.IsZero() {
		return false
	}
	if a.Network() == distcache.NetworkUnix {
		return cleanPath(a.Path()) == cleanPath(b.Path())
	}
	if a.Port() == 0 || a.Port() != b.Port() {
		return false
	}
	ah, bh := normHost(a.Host()), normHost(b.Host())
	if wildcard(ah) || wildcard(bh) {
		return true
	}
	aip, aerr := netip.ParseAddr(ah)
	bip, berr := netip.ParseAddr(bh)
	if aerr == nil && berr == nil {
		return aip.Unmap() == bip.Unmap()
	}
	return ah == bh
}

func wildcard(h string) bool {
	if h == "" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsUnspecified()
}

// keptAddr returns an error if listen is the address of a
// registered proxy that is not listening now (disabled, or failed): it
// keeps its address, so that enabling it later cannot find its port
// taken by a proxy of the same daemon. Listening proxies need no check,
// the bind finds them. Proxies in skip are left out. Only the proxies
// filed under listen's port or path are looked at (see addrIndex).
func (h held) keptAddr(field string, listen distcache.Addr, skip map[string]bool) error {
	var err error
	h.listeners(listen, func(e *entry) bool {
		name := e.spec.GetName()
		if e.placeholder || e.removing || skip[name] || e.p == nil {
			return true
		}
		if bound := h.boundAddr(e); listenClash(listen, bound) && !e.p.Listening() {
			how := "disabled"
			if enabledOf(e.spec) {
				how = "failed (not listening)"
			}
			err = fmt.Errorf("%s: %s: %w: proxy %s of this daemon keeps it while %s (remove it or move it first)",
				field, bound, proxy.ErrAddrInUse, quote(name), how)
			return false
		}
		return true
	})
	return err
}

// bindError makes an error of binding a proxy's listen address fit for
// the API: an address in use (or a path held by a file) stays as it is,
// ALREADY_EXISTS; running out of descriptors or memory is the daemon's
// problem, not the request's; anything else (an address this host does
// not have, a directory that does not exist, a privileged port) is the
// listen address's fault, a field violation on it, and a permission
// problem is PERMISSION_DENIED.
func bindError(field string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, proxy.ErrFaultsNeedEpoll), errors.Is(err, proxy.ErrInvalidConfig):
		// Not the listen address's fault.
		return err
	case errors.Is(err, proxy.ErrAddrInUse), errors.Is(err, proxy.ErrPathExists), errors.Is(err, proxy.ErrStopped),
		errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE), errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOMEM):
		return err
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, fs.ErrPermission):
		return &FieldError{Field: field, Reason: "cannot listen: " + err.Error(), Err: err, Permission: true}
	}
	return &FieldError{Field: field, Reason: "cannot listen: " + err.Error(), Err: err}
}
