package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"syscall"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/proxy"
)

// Errors a caller of Daemon tells apart. Status maps them to gRPC codes.
var (
	// ErrNotFound: no proxy (or connection) by that name (or id).
	ErrNotFound = errors.New("not found")
	// ErrExists: the name is taken.
	ErrExists = errors.New("already exists")
	// ErrBusy: another request is changing the same proxy right now.
	ErrBusy = errors.New("busy")
	// ErrUnauthenticated: a control call without the right credentials.
	ErrUnauthenticated = errors.New("unauthenticated")
)

// FieldError is bad input in one field of a request.
type FieldError struct {
	Field  string // the field's path, e.g. "spec.listen" or "proxies[2].server"
	Reason string
	Err    error // the underlying error, if any
	// Permission makes it PERMISSION_DENIED rather than
	// INVALID_ARGUMENT: the value is fine, the daemon may not use it
	// (a privileged port, a directory it cannot write).
	Permission bool
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error) *FieldError {
	return &FieldError{Field: field, Reason: err.Error(), Err: err}
}

// prefixField puts a path in front of a FieldError's field, for errors of
// entries in a list ("proxies[3]" + ".listen").
func prefixField(prefix string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: prefix + "." + fe.Field, Reason: fe.Reason, Err: fe.Err, Permission: fe.Permission}
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// Status turns an error of this package (or of the packages under it) into
// the gRPC status the API returns. It is the one place where that mapping
// lives.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var fe *FieldError
	switch {
	case errors.As(err, &fe):
		code := codes.InvalidArgument
		if fe.Permission {
			code = codes.PermissionDenied
		}
		st := status.New(code, capMessage(err.Error()))
		if d, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: fe.Field, Description: capMessage(fe.Reason)},
		}}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, ErrNotSaved):
		// Not transient: the disk needs the operator (space, a device,
		// permissions) before a retry can succeed.
		return status.Error(codes.FailedPrecondition, capMessage(err.Error()))
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE), errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOMEM):
		return status.Error(codes.ResourceExhausted, capMessage(err.Error()))
	case errors.Is(err, distcache.ErrInvalidAddr), errors.Is(err, proxy.ErrInvalidConfig):
		return status.Error(codes.InvalidArgument, capMessage(err.Error()))
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, capMessage(err.Error()))
	case errors.Is(err, ErrExists), errors.Is(err, proxy.ErrAddrInUse), errors.Is(err, proxy.ErrPathExists):
		return status.Error(codes.AlreadyExists, capMessage(err.Error()))
	case errors.Is(err, ErrBusy), errors.Is(err, proxy.ErrStopped), errors.Is(err, fs.ErrNotExist):
		return status.Error(codes.FailedPrecondition, capMessage(err.Error()))
	case errors.Is(err, fs.ErrPermission):
		return status.Error(codes.PermissionDenied, capMessage(err.Error()))
	case errors.Is(err, ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, hub.ErrClosed):
		return status.Error(codes.Unavailable, "snoopd is shutting down")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, capMessage(err.Error()))
}

// maxMessage bounds an error message the API returns. Names and values
// are clipped where they are quoted (see clip); this is the net under
// that, for text quoted by packages that do not clip.
const maxMessage = 2048

func capMessage(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(message of " + strconv.Itoa(len(s)) + " bytes cut)"
}
