package daemon

import (
	"errors"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/proxy"
)

// compileFilter turns a watch request into a hub filter: the request
// becomes the matcher's spec (the same conversion snoopctl read uses), the
// spec is compiled once, CEL included, and every event is matched on its
// view. A bad value is a FieldError naming the request's field.
func compileFilter(req *snoopv1.WatchEventsRequest) (hub.Filter, error) {
	spec, err := apiconv.SpecFromRequest(req)
	if err != nil {
		return nil, fieldError(err)
	}
	m, err := match.Compile(spec)
	if err != nil {
		return nil, fieldError(err)
	}
	if m.MatchesAll() {
		return nil, nil
	}
	return func(e *proxy.Event) bool {
		var v match.View
		e.MatchView(&v)
		return m.Match(&v)
	}, nil
}

// fieldError turns the matcher's field errors into the daemon's.
func fieldError(err error) error {
	var fe *match.FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: fe.Field, Reason: fe.Reason}
	}
	return err
}
