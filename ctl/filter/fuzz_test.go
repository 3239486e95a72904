package filter

import (
	"encoding/hex"
	"testing"
)

// FuzzParseSessionPrefix checks that a prefix is the hex it was written
// as, or an error, and never longer than a session id.
func FuzzParseSessionPrefix(f *testing.F) {
	for _, s := range []string{"0a1b", "0A1B", "abc", "zz", "", "00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseSessionPrefix(s)
		if err != nil {
			return
		}
		if len(b) > 64 {
			t.Fatalf("%q gave a %d-byte prefix", s, len(b))
		}
		if want, herr := hex.DecodeString(s); herr == nil && string(want) != string(b) {
			t.Fatalf("%q gave % x, want % x", s, b, want)
		}
	})
}
