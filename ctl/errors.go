package ctl

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snoopd/snoopd/internal/endpoint"
)

// Exit codes of snoopctl.
const (
	ExitOK      = 0 // the command did what was asked
	ExitFailure = 1 // something failed: the daemon, a file, a write
	ExitUsage   = 2 // the command line was wrong: unknown command or flag, bad value
)

// cliError is an error that already reads as snoopctl's one-line message,
// with the exit code that goes with it.
type cliError struct {
	msg  string
	code int
}

func (e *cliError) Error() string { return e.msg }

// usagef reports a mistake on the command line (exit 2).
func usagef(format string, args ...any) error {
	return &cliError{msg: fmt.Sprintf(format, args...), code: ExitUsage}
}

// failf reports a failure (exit 1).
func failf(format string, args ...any) error {
	return &cliError{msg: fmt.Sprintf(format, args...), code: ExitFailure}
}

// exitCode is the exit code for err.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ce *cliError
	if errors.As(err, &ce) {
		return ce.code
	}
	return ExitFailure
}

// hintAddress is what to do when the daemon cannot be reached.
const hintAddress = "is snoopd running? set --address or " + endpoint.EnvAddress

// reasonOf is the ErrorInfo reason of a status, or "": snoopd details
// every resource error with one (PROXY_EXISTS, ADDRESS_IN_USE, ...).
func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// unreachable is the error for a daemon that cannot be reached, with the
// plain reason and what to try.
func (e *env) unreachable(reason, hint string) error {
	if hint == "" {
		hint = hintAddress
	}
	return failf("cannot reach snoopd at %s: %s (%s)", e.display(), reason, hint)
}

// rpcError turns the error of a call into one line: action says what was
// being done ("remove demo"); notFound, when set, replaces the daemon's
// message for NOT_FOUND (for example `no proxy named "demo"`).
func (e *env) rpcError(err error, action, notFound string) error {
	st, ok := status.FromError(err)
	if !ok {
		return failf("%s: %v", action, err)
	}
	msg := oneLine(st.Message())
	switch st.Code() {
	case codes.Unavailable:
		if strings.Contains(msg, "shutting down") {
			// It was reached; asking whether it runs would mislead.
			return failf("%s: snoopd at %s is shutting down", action, e.display())
		}
		reason, hint := plainReason(msg)
		return e.unreachable(reason, hint)
	case codes.DeadlineExceeded:
		return failf("%s: snoopd at %s did not answer within %s (is it overloaded or stuck? raise --timeout to wait longer)",
			action, e.display(), e.opts.timeout)
	case codes.Canceled:
		return failf("%s: interrupted", action)
	case codes.NotFound:
		if notFound != "" {
			return failf("%s: %s (see 'snoopctl list')", action, notFound)
		}
		return failf("%s: %s", action, msg)
	case codes.AlreadyExists:
		if reasonOf(st) == "ADDRESS_IN_USE" {
			return failf("%s: %s", action, msg) // the daemon says who holds it
		}
		return failf("%s: %s (pick another name or listen address, or remove the old proxy first)", action, msg)
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return failf("%s: %s", action, msg)
	case codes.Unauthenticated:
		if e.opts.tokenFile == "" {
			return failf("%s: the daemon wants a token: set --token-file or SNOOPD_TOKEN_FILE", action)
		}
		return failf("%s: the daemon refused the token in %s: %s (check the file)", action, e.opts.tokenFile, msg)
	case codes.PermissionDenied:
		return failf("%s: the daemon refused: %s", action, msg)
	case codes.Unimplemented:
		return failf("%s: snoopd at %s does not offer this (is it older than snoopctl? compare 'snoopctl version')", action, e.display())
	case codes.ResourceExhausted:
		return failf("%s: snoopd is at a limit: %s", action, msg)
	}
	return failf("%s: snoopd failed: %s (%s)", action, msg, strings.ToLower(st.Code().String()))
}

// plainReason turns gRPC's description of a failed connection into a few
// words, and says what to check.
func plainReason(msg string) (reason, hint string) {
	lower := strings.ToLower(msg)
	has := func(s string) bool { return strings.Contains(lower, s) }
	switch {
	case has("connection refused"):
		return "connection refused", ""
	case has("no such file"):
		return "no such file", ""
	case has("permission denied"):
		return "permission denied", "use an account that may open the socket, or set --address"
	case has("handshake failed"), has("x509"), has("tls:"), has("certificate"):
		if i := strings.Index(lower, "handshake failed: "); i >= 0 {
			msg = msg[i+len("handshake failed: "):]
		}
		return "TLS handshake failed: " + strings.TrimSuffix(msg, `"`), "check --tls-ca, --tls-cert and --tls-key"
	case has("no such host"):
		return "no such host", "check the host name in --address"
	case has("i/o timeout"), has("deadline"):
		return "timed out", hintAddress
	case has("server preface"), has("eof"), has("frame too large"), has("http2"):
		return "the connection broke while it was set up", "does snoopd there want TLS? set --tls-ca"
	case has("connection reset"):
		return "connection reset", ""
	}
	msg = strings.TrimPrefix(msg, "connection error: desc = ")
	msg = strings.Trim(msg, `"`)
	msg = strings.TrimPrefix(msg, "transport: ")
	msg = strings.TrimPrefix(msg, "Error while dialing: ")
	return msg, ""
}

// oneLine keeps a message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// count writes n with its noun in the right number: "1 event",
// "2 events".
func count(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// fileError says in a few words why a file could not be read: "no such
// file /x.json", not "open /x.json: no such file or directory".
func fileError(path string, err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file " + path
	case errors.Is(err, fs.ErrPermission):
		return "permission denied reading " + path
	case errors.As(err, &pe):
		return path + ": " + pe.Err.Error()
	}
	return path + ": " + err.Error()
}

// noProxy is rpcError's notFound for a call about the proxy name.
func noProxy(name string) string {
	return fmt.Sprintf("no proxy named %q", name)
}
