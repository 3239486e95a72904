package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	textclip "github.com/snoopd/snoopd/internal/clip"
	"github.com/snoopd/snoopd/internal/listen"
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
	// ErrTooManyWatchers: the daemon serves as many event streams as it
	// allows (--max-watchers).
	ErrTooManyWatchers = errors.New("too many event streams")
)

// Resource types the API's error details name (ResourceInfo.resource_type):
// the full names of the messages that describe them.
const (
	ProxyResource      = "snoop.v1.Proxy"
	ConnectionResource = "snoop.v1.Connection"
)

// ErrorDomain is ErrorInfo.domain in every error the API details.
const ErrorDomain = "snoopd"

// ResourceError ties an error to the resource it is about, so that the
// API's answer can name it in ResourceInfo and ErrorInfo details and a
// client need not parse the message. Its message is Err's.
type ResourceError struct {
	Type string // ProxyResource or ConnectionResource
	Name string // the proxy's name; for a connection, "<proxy>/<id>"
	// Address is the listen address of an address-in-use error.
	Address string
	Err     error
}

func (e *ResourceError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ResourceError) Unwrap() error { return e.Err }

// proxyNotFound is the error for a proxy name that is not registered.
func proxyNotFound(name string) error {
	return &ResourceError{Type: ProxyResource, Name: clip(name), Err: fmt.Errorf("proxy %s: %w", quote(name), ErrNotFound)}
}

// proxyExists is the error for a name that is taken.
func proxyExists(name string) error {
	return &ResourceError{Type: ProxyResource, Name: clip(name), Err: fmt.Errorf("proxy %s: %w", quote(name), ErrExists)}
}

// listenError ties a proxy's failure to listen to the proxy and address,
// for the details of an ADDRESS_IN_USE; bindError then decides its code.
func listenError(name string, listen distcache.Addr, err error) error {
	return &ResourceError{Type: ProxyResource, Name: name, Address: listen.String(), Err: err}
}

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
		return resourceStatus(codes.NotFound, err)
	case errors.Is(err, ErrExists), errors.Is(err, listen.ErrAddrInUse), errors.Is(err, listen.ErrPathExists):
		return resourceStatus(codes.AlreadyExists, err)
	case errors.Is(err, ErrBusy), errors.Is(err, proxy.ErrStopped), errors.Is(err, fs.ErrNotExist), errors.Is(err, proxy.ErrFaultsNeedEpoll), errors.Is(err, ErrTapForwardsNothing):
		return status.Error(codes.FailedPrecondition, capMessage(err.Error()))
	case errors.Is(err, fs.ErrPermission):
		return status.Error(codes.PermissionDenied, capMessage(err.Error()))
	case errors.Is(err, ErrTooManyWatchers):
		return status.Error(codes.ResourceExhausted, capMessage(err.Error()))
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
	return textclip.Prefix(s, maxMessage) + "…(message of " + strconv.Itoa(len(s)) + " bytes cut)"
}

// resourceStatus is a NOT_FOUND or ALREADY_EXISTS status with the details a
// script acts on without parsing the message: ErrorInfo (a reason such as
// PROXY_NOT_FOUND, PROXY_EXISTS or ADDRESS_IN_USE, in domain "snoopd")
// and, when the error names its resource, ResourceInfo.
func resourceStatus(code codes.Code, err error) error {
	var re *ResourceError
	errors.As(err, &re)
	if re == nil {
		re = &ResourceError{Type: ProxyResource}
	}
	info := &errdetails.ErrorInfo{Domain: ErrorDomain, Metadata: map[string]string{}}
	msg := capMessage(err.Error())
	res := &errdetails.ResourceInfo{ResourceType: re.Type, ResourceName: re.Name}
	thing := "proxy"
	if re.Type == ConnectionResource {
		thing = "connection"
	}
	switch {
	case errors.Is(err, ErrNotFound):
		info.Reason = strings.ToUpper(thing) + "_NOT_FOUND"
		res.Description = "no " + thing + " by this name"
	case errors.Is(err, ErrExists):
		info.Reason = strings.ToUpper(thing) + "_EXISTS"
		res.Description = "a " + thing + " by this name exists"
	default: // the listen address is taken
		info.Reason = "ADDRESS_IN_USE"
		res.Description = "cannot listen: " + msg
		if re.Address != "" {
			info.Metadata["address"] = re.Address
		}
	}
	if re.Name != "" {
		info.Metadata[thing] = re.Name
	}
	st := status.New(code, msg)
	details := []protoadapt.MessageV1{info}
	if re.Name != "" {
		details = append(details, res)
	}
	if d, derr := st.WithDetails(details...); derr == nil {
		st = d
	}
	return st.Err()
}
