package skip

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The helpers are run in a child test binary, because a skip ends the
// test that calls it.
func TestSkipsAreLoggedWithTheirKind(t *testing.T) {
	if os.Getenv("SKIP_TEST_CHILD") != "" {
		t.Run("missing", func(t *testing.T) { Missing(t, "frobnicate is not installed") })
		t.Run("design", func(t *testing.T) { ByDesign(t, "a measurement:\nset X=1") })
		return
	}
	log := filepath.Join(t.TempDir(), "skips")
	cmd := exec.Command(os.Args[0], "-test.run", "^TestSkipsAreLoggedWithTheirKind$", "-test.v")
	cmd.Env = append(os.Environ(), "SKIP_TEST_CHILD=1", LogEnv+"="+log)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- SKIP: TestSkipsAreLoggedWithTheirKind/missing") {
		t.Fatalf("the child did not skip:\n%s", out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	want := wd + "\tTestSkipsAreLoggedWithTheirKind/missing\tmissing\tfrobnicate is not installed\n" +
		wd + "\tTestSkipsAreLoggedWithTheirKind/design\tby design\ta measurement: set X=1\n"
	if string(b) != want {
		t.Fatalf("log:\n%s\nwant:\n%s", b, want)
	}
}

func TestWithoutTheLogASkipIsOnlyASkip(t *testing.T) {
	if os.Getenv("SKIP_TEST_CHILD") != "" {
		Missing(t, "nothing")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestWithoutTheLogASkipIsOnlyASkip$", "-test.v")
	cmd.Env = append(os.Environ(), "SKIP_TEST_CHILD=1", LogEnv+"=")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(cmd.Dir); len(entries) != 0 {
		t.Fatalf("files written without a log: %v", entries)
	}
}
