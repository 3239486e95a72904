package daemon

import (
	"errors"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/match"
)

// compileFilter turns a watch request into a hub filter: the request
// becomes the matcher's spec (the same conversion snoopctl read uses), the
// spec is compiled once, CEL included, and every event is matched on its
// view, on the watch stream's own goroutine. The flag filters alone, which
// cost nanoseconds, are also the quick filter the hub counts a stream's
// lost events with. A bad value is a FieldError naming the request's
// field.
func compileFilter(req *snoopv1.WatchEventsRequest) (hub.Filter, error) {
	spec, err := apiconv.SpecFromRequest(req)
	if err != nil {
		return hub.Filter{}, fieldError(err)
	}
	return filterFor(spec, "")
}

// filterFor compiles spec into a hub filter; daemon, if set, is the name
// the view carries (the export matches on it).
func filterFor(spec match.Spec, daemon string) (hub.Filter, error) {
	m, err := match.Compile(spec)
	if err != nil {
		return hub.Filter{}, fieldError(err)
	}
	if m.MatchesAll() {
		return hub.Filter{}, nil
	}
	flags := spec
	flags.Expr = ""
	q, err := match.Compile(flags)
	if err != nil {
		return hub.Filter{}, fieldError(err)
	}
	f := hub.Filter{Full: viewMatcher(m, daemon)}
	if !q.MatchesAll() {
		f.Quick = viewMatcher(q, daemon)
	}
	return f, nil
}

func viewMatcher(m *match.Matcher, daemon string) func(*match.View) bool {
	if daemon == "" {
		return m.Match
	}
	return func(v *match.View) bool {
		c := *v
		c.Daemon = daemon
		return m.Match(&c)
	}
}

// HubFilter compiles spec into the hub's filter for a consumer outside
// this package (the NATS export), with daemon as the name events carry.
func HubFilter(spec match.Spec, daemon string) (hub.Filter, error) {
	return filterFor(spec, daemon)
}

// fieldError turns the matcher's field errors into the daemon's.
func fieldError(err error) error {
	var fe *match.FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: fe.Field, Reason: fe.Reason}
	}
	return err
}
