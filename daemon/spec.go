package daemon

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/labels"
	"github.com/snoopd/snoopd/proxy"
)

// Limits on spec fields, beyond what the proxy package checks.
const (
	maxDialTimeout  = 5 * time.Minute
	maxCaptureLimit = distcache.MaxSessionDataLen
	maxSpares       = 64
	// maxProxyTimeout bounds the idle, message and response timeouts: a
	// day is longer than any sensible wait, and a larger value is more
	// likely a unit mistake than a wish.
	maxProxyTimeout = 24 * time.Hour
)

// proxyTimeout converts one of the spec's optional timeouts to the proxy
// package's form: unset is 0 (the proxy's default), an explicit zero is
// -1 (off), anything else is itself. field names it in errors.
func proxyTimeout(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, &FieldError{Field: field, Reason: fmt.Sprintf("not a valid duration (%v); want 0 (off) to %v", err, maxProxyTimeout), Err: err}
	}
	v := d.AsDuration()
	switch {
	case v < 0 || v > maxProxyTimeout:
		return 0, &FieldError{Field: field, Reason: fmt.Sprintf("%v: want 0 (off) to %v", v, maxProxyTimeout)}
	case v == 0:
		return -1, nil
	}
	return v, nil
}

// proxyPolicies are the policies a proxy may be given, as errors name
// them (the enum's RESYNC is a capture's, only seen in events).
const proxyPolicies = "CORRUPT_POLICY_CLOSE (1), or CORRUPT_POLICY_PASSTHROUGH (2)"

// normalize checks spec and returns the canonical form the daemon stores
// and compares: addresses written back in libnal syntax, enabled and the
// corrupt policy explicit. Two specs that mean the same normalise to equal
// messages, which is what makes apply idempotent.
func normalize(spec *snoopv1.ProxySpec) (*snoopv1.ProxySpec, proxy.Config, error) {
	if spec == nil {
		return nil, proxy.Config{}, &FieldError{Field: "spec", Reason: "missing"}
	}
	if err := proxy.ValidateName(spec.GetName()); err != nil {
		return nil, proxy.Config{}, fieldErr("name", err)
	}
	if isTap(spec) {
		return normalizeTap(spec)
	}
	if spec.GetListen() == "" {
		return nil, proxy.Config{}, &FieldError{Field: "listen", Reason: "missing (example: IP:127.0.0.1:9001 or UNIX:/run/dc.sock)"}
	}
	listen, err := distcache.ParseListenAddr(spec.GetListen())
	if err != nil {
		return nil, proxy.Config{}, fieldErr("listen", err)
	}
	if spec.GetServer() == "" {
		return nil, proxy.Config{}, &FieldError{Field: "server", Reason: "missing (example: IP:127.0.0.1:9000 or UNIX:/run/dcserver.sock)"}
	}
	server, err := distcache.ParseConnectAddr(spec.GetServer())
	if err != nil {
		return nil, proxy.Config{}, fieldErr("server", err)
	}
	opts := proxy.Options{
		CaptureData:  spec.GetCaptureData(),
		CaptureLimit: int(spec.GetCaptureLimit()),
		MaxConns:     int(spec.GetMaxConnections()),
		SocketMode:   os.FileMode(spec.GetSocketMode()),
	}
	switch spec.GetOnCorrupt() {
	case snoopv1.CorruptPolicy_CORRUPT_POLICY_UNSPECIFIED, snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE:
		opts.OnCorrupt = proxy.CloseOnCorrupt
	case snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH:
		opts.OnCorrupt = proxy.PassThrough
	case snoopv1.CorruptPolicy_CORRUPT_POLICY_RESYNC:
		return nil, proxy.Config{}, &FieldError{Field: "on_corrupt", Reason: "CORRUPT_POLICY_RESYNC is what a capture does, which forwards nothing; a proxy closes (CORRUPT_POLICY_CLOSE) or passes through (CORRUPT_POLICY_PASSTHROUGH)"}
	default:
		return nil, proxy.Config{}, &FieldError{Field: "on_corrupt", Reason: fmt.Sprintf("unknown policy %d: want %s, or 0 (unset) for CORRUPT_POLICY_CLOSE",
			int32(spec.GetOnCorrupt()), proxyPolicies)}
	}
	if spec.GetCaptureLimit() > maxCaptureLimit {
		return nil, proxy.Config{}, &FieldError{Field: "capture_limit", Reason: fmt.Sprintf("%d is above the largest session, %d", spec.GetCaptureLimit(), maxCaptureLimit)}
	}
	if spec.GetSocketMode() > 0o777 {
		return nil, proxy.Config{}, &FieldError{Field: "socket_mode", Reason: fmt.Sprintf("%#o is not a permission (want 0 to 0777)", spec.GetSocketMode())}
	}
	if spec.SpareConnections != nil {
		n := spec.GetSpareConnections()
		if n > maxSpares {
			return nil, proxy.Config{}, &FieldError{Field: "spare_connections", Reason: fmt.Sprintf("%d is more than %d", n, maxSpares)}
		}
		opts.Spares = int(n)
		if n == 0 {
			opts.Spares = -1 // the proxy package's "none"
		}
	}
	if d := spec.GetDialTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 || d.AsDuration() > maxDialTimeout {
			return nil, proxy.Config{}, &FieldError{Field: "dial_timeout", Reason: fmt.Sprintf("want 0 to %v", maxDialTimeout), Err: err}
		}
		opts.DialTimeout = d.AsDuration()
	}
	for _, t := range []struct {
		field string
		d     *durationpb.Duration
		to    *time.Duration
	}{
		{"idle_timeout", spec.GetIdleTimeout(), &opts.IdleTimeout},
		{"message_timeout", spec.GetMessageTimeout(), &opts.MessageTimeout},
		{"response_timeout", spec.GetResponseTimeout(), &opts.ResponseTimeout},
	} {
		v, err := proxyTimeout(t.field, t.d)
		if err != nil {
			return nil, proxy.Config{}, err
		}
		*t.to = v
	}
	if err := labels.Validate(spec.GetLabels()); err != nil {
		return nil, proxy.Config{}, &FieldError{Field: "labels", Reason: err.Error(), Err: err}
	}
	faults, _, err := faultSpecs(spec.GetFaults())
	if err != nil {
		return nil, proxy.Config{}, err
	}
	// The faults stay as declared (their defaults are effective_spec's),
	// so that spec reads back what was asked for.
	out := proto.Clone(spec).(*snoopv1.ProxySpec)
	out.Listen, out.Server = listen.String(), server.String()
	// enabled and on_corrupt stay as declared too, unset meaning the
	// default (enabledOf; the policy's 0 is close): effective_spec has
	// them filled in.
	if out.DialTimeout != nil && out.DialTimeout.AsDuration() == 0 {
		out.DialTimeout = nil
	}
	cfg := proxy.Config{Name: spec.GetName(), Listen: listen, Server: server, Enabled: enabledOf(out), Options: opts, Faults: faults}
	if err := cfg.Validate(); err != nil {
		return nil, proxy.Config{}, &FieldError{Field: "spec", Reason: err.Error(), Err: err}
	}
	return out, cfg, nil
}

// updatableFields are the spec fields UpdateProxy may change, in the
// order error messages list them.
var updatableFields = []string{
	"enabled", "server", "on_corrupt", "capture_data", "capture_limit", "max_connections",
	"dial_timeout", "spare_connections", "idle_timeout", "message_timeout", "response_timeout",
	"faults", "labels",
}

// cloneDuration copies an optional duration, keeping nil as nil and an
// explicit zero as zero (for the timeouts, zero means off).
func cloneDuration(d *durationpb.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return proto.Clone(d).(*durationpb.Duration)
}

// applyMask returns cur with the fields named in paths taken from next.
func applyMask(cur, next *snoopv1.ProxySpec, paths []string) (*snoopv1.ProxySpec, error) {
	list := strings.Join(updatableFields, ", ")
	if len(paths) == 0 {
		return nil, &FieldError{Field: "update_mask", Reason: "empty: name the fields to change (" + list + ")"}
	}
	out := proto.Clone(cur).(*snoopv1.ProxySpec)
	for _, p := range paths {
		if !slices.Contains(updatableFields, p) {
			return nil, &FieldError{Field: "update_mask", Reason: fmt.Sprintf("%q cannot be updated (updatable: %s; to move a proxy, delete and create it)", p, list)}
		}
		switch p {
		case "enabled":
			out.Enabled = proto.Bool(next.Enabled == nil || *next.Enabled)
		case "server":
			out.Server = next.GetServer()
		case "on_corrupt":
			// Named in the mask, the policy is meant to be set: a 0 here
			// is most likely a name the client library did not know,
			// which would silently become the default.
			if next.GetOnCorrupt() == snoopv1.CorruptPolicy_CORRUPT_POLICY_UNSPECIFIED {
				return nil, &FieldError{Field: "spec.on_corrupt", Reason: "unset or 0 (CORRUPT_POLICY_UNSPECIFIED) while update_mask names it; " + unknownName +
					": want " + proxyPolicies}
			}
			out.OnCorrupt = next.GetOnCorrupt()
		case "capture_data":
			out.CaptureData = next.GetCaptureData()
		case "capture_limit":
			out.CaptureLimit = next.GetCaptureLimit()
		case "max_connections":
			out.MaxConnections = next.GetMaxConnections()
		case "spare_connections":
			out.SpareConnections = nil
			if next.SpareConnections != nil {
				out.SpareConnections = proto.Uint32(next.GetSpareConnections())
			}
		case "dial_timeout":
			out.DialTimeout = cloneDuration(next.GetDialTimeout())
		case "idle_timeout":
			out.IdleTimeout = cloneDuration(next.GetIdleTimeout())
		case "message_timeout":
			out.MessageTimeout = cloneDuration(next.GetMessageTimeout())
		case "response_timeout":
			out.ResponseTimeout = cloneDuration(next.GetResponseTimeout())
		case "faults":
			out.Faults = nil
			for _, f := range next.GetFaults() {
				out.Faults = append(out.Faults, proto.Clone(f).(*snoopv1.Fault))
			}
		case "labels":
			out.Labels = maps.Clone(next.GetLabels())
		}
	}
	return out, nil
}

// enabledOf reports whether spec enables its proxy: enabled unset means
// enabled, as the API documents.
func enabledOf(spec *snoopv1.ProxySpec) bool {
	return spec.Enabled == nil || *spec.Enabled
}

// normalizeTap is normalize for a tap (tap_interface set): a server
// that is a TCP address or a bare port, as a capture takes it
// (sniff.ParseServer), written back in libnal syntax ("9001" becomes
// "IP:9001", any address); no listen address; of the rest only
// enabled, capture_data, capture_limit and labels. A field that only a
// proxy in the traffic's path uses is refused by name rather than
// ignored, faults above all: nothing passes through a tap.
func normalizeTap(spec *snoopv1.ProxySpec) (*snoopv1.ProxySpec, proxy.Config, error) {
	iface := spec.GetTapInterface()
	if len(iface) > maxInterfaceName || strings.ContainsAny(iface, "/ \t\n\x00") {
		return nil, proxy.Config{}, &FieldError{Field: "tap_interface", Reason: fmt.Sprintf("%s is no network interface name (at most %d bytes, no '/' or space; example: eth0, lo)", quote(iface), maxInterfaceName)}
	}
	if spec.GetListen() != "" {
		return nil, proxy.Config{}, &FieldError{Field: "listen", Reason: fmt.Sprintf("set to %s, but a tap listens nowhere: it captures on %s; leave listen out, or tap_interface to make a proxy", quote(spec.GetListen()), quote(iface))}
	}
	if len(spec.GetFaults()) > 0 {
		return nil, proxy.Config{}, &FieldError{Field: "faults", Reason: ErrTapForwardsNothing.Error(), Err: ErrTapForwardsNothing}
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"on_corrupt", spec.GetOnCorrupt() != snoopv1.CorruptPolicy_CORRUPT_POLICY_UNSPECIFIED},
		{"max_connections", spec.GetMaxConnections() != 0},
		{"dial_timeout", spec.GetDialTimeout() != nil},
		{"socket_mode", spec.GetSocketMode() != 0},
		{"spare_connections", spec.SpareConnections != nil},
		{"idle_timeout", spec.GetIdleTimeout() != nil},
		{"message_timeout", spec.GetMessageTimeout() != nil},
		{"response_timeout", spec.GetResponseTimeout() != nil},
	} {
		if f.set {
			return nil, proxy.Config{}, &FieldError{Field: f.name, Reason: "a proxy's setting, which a tap does not have: it forwards nothing, it only watches"}
		}
	}
	if spec.GetServer() == "" {
		return nil, proxy.Config{}, &FieldError{Field: "server", Reason: "missing: the server whose traffic the tap captures (example: IP:10.0.0.5:9000, or 9000 for that port on any address)"}
	}
	server, err := tapServer(spec.GetServer())
	if err != nil {
		return nil, proxy.Config{}, &FieldError{Field: "server", Reason: err.Error(), Err: err}
	}
	if spec.GetCaptureLimit() > maxCaptureLimit {
		return nil, proxy.Config{}, &FieldError{Field: "capture_limit", Reason: fmt.Sprintf("%d is above the largest session, %d", spec.GetCaptureLimit(), maxCaptureLimit)}
	}
	if err := labels.Validate(spec.GetLabels()); err != nil {
		return nil, proxy.Config{}, &FieldError{Field: "labels", Reason: err.Error(), Err: err}
	}
	out := proto.Clone(spec).(*snoopv1.ProxySpec)
	out.Server = server.String()
	cfg := proxy.Config{Name: spec.GetName(), Server: server, Enabled: enabledOf(out),
		Options: proxy.Options{CaptureData: spec.GetCaptureData(), CaptureLimit: int(spec.GetCaptureLimit())}}
	return out, cfg, nil
}

// maxInterfaceName is the longest network interface name Linux allows
// (IFNAMSIZ less its NUL).
const maxInterfaceName = 15

// tapServer reads a tap's server as sniff.ParseServer does, without
// looking a host name up (that is done when the capture starts, so a
// state file never waits on DNS): a TCP address with a port, or a bare
// port, which is written "IP:PORT" (any address).
func tapServer(s string) (distcache.Addr, error) {
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		s = "IP:" + strconv.FormatUint(n, 10)
	}
	a, err := distcache.ParseAddr(s)
	switch {
	case err != nil:
		return distcache.Addr{}, err
	case a.Network() != distcache.NetworkTCP:
		return distcache.Addr{}, fmt.Errorf("%s: a tap captures TCP only, not a unix socket (example: IP:10.0.0.5:9000)", quote(s))
	case a.Port() == 0:
		return distcache.Addr{}, fmt.Errorf("%s: port 0 is no server's port (example: IP:10.0.0.5:9000)", quote(s))
	}
	return a, nil
}
