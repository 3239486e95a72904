// Package skip is how the project's tests decline to run, so that a skip
// is never silent where it matters.
//
// A test that cannot run on this machine (a tool, root or a kernel
// feature is missing) calls Missing; a test that is skipped on purpose
// (a measurement that runs only when asked, -short, a test that belongs
// to the other engine) calls ByDesign. Both skip the test as t.Skip does
// and, when the environment variable SNOOPD_SKIP_LOG names a file, append
// one line to it: the test's name, "missing" or "by design", and the
// reason. .ci/run sets the variable, prints the file by name at the end
// and fails when a line says "missing": CI installs everything the tests
// need, so a test skipped for a missing tool there is a test that did not
// run when it should have.
package skip

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// LogEnv names the environment variable that names the skip log.
const LogEnv = "SNOOPD_SKIP_LOG"

// Kinds of skip, as written in the log.
const (
	KindMissing  = "missing"
	KindByDesign = "by design"
)

// Missing skips t because the machine lacks something the test needs;
// the reason should name it ("tshark is not installed").
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	skip(t, KindMissing, fmt.Sprintf(format, args...))
}

// ByDesign skips t for a reason that holds on every machine.
func ByDesign(t testing.TB, format string, args ...any) {
	t.Helper()
	skip(t, KindByDesign, fmt.Sprintf(format, args...))
}

func skip(t testing.TB, kind, reason string) {
	t.Helper()
	if path := os.Getenv(LogEnv); path != "" {
		if err := record(path, t.Name(), kind, reason); err != nil {
			// The log is how CI sees the skip: losing it must fail
			// the test rather than hide it.
			t.Fatalf("recording the skip in %s: %v", path, err)
		}
	}
	t.Skip(reason)
}

// record appends one line to the log. Test binaries of several packages
// run at once: each line goes in one write to a file opened for
// appending, so lines do not interleave.
func record(path, name, kind, reason string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("%s\t%s\t%s\t%s\n", packageName(), name, kind, oneLine(reason))
	_, werr := f.WriteString(line)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}

// packageName names the test binary's package by its directory: go test
// runs each package's tests in the package's own directory.
func packageName() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	return wd
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
