package skip

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEveryTestSkipsThroughThisPackage reads the repository's Go files
// (tests, and the helpers tests call, such as internal/testutil's): a
// plain t.Skip would skip unseen by CI, so every skip goes through Missing
// or ByDesign.
func TestEveryTestSkipsThroughThisPackage(t *testing.T) {
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		ByDesign(t, "not in a git checkout: %v", err)
	}
	top := strings.TrimSpace(string(root))
	files, err := exec.Command("git", "-C", top, "ls-files", "*.go").Output()
	if err != nil {
		t.Fatal(err)
	}
	plain := regexp.MustCompile(`\b[tbf]\.Skip(f|Now)?\(`)
	self, _ := filepath.Abs(".")
	for _, f := range strings.Fields(string(files)) {
		path := filepath.Join(top, f)
		if filepath.Dir(path) == self {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range bytes.Split(b, []byte("\n")) {
			if plain.Match(line) {
				t.Errorf("%s:%d skips without saying why to CI (use skip.Missing or skip.ByDesign): %s", f, i+1, bytes.TrimSpace(line))
			}
		}
	}
}
