package size

import "testing"

func TestParse(t *testing.T) {
	good := map[string]int64{
		"1": 1, "500000": 500000, "7B": 7, "64k": 64 << 10, "64K": 64 << 10, "64KB": 64 << 10, "64KiB": 64 << 10,
		"10M": 10 << 20, "10mb": 10 << 20, "10MiB": 10 << 20, "1.5GiB": 3 << 29, "2 G": 2 << 30, "1TB": 1 << 40,
		"16M": 16 << 20, "0.5K": 512,
	}
	for s, want := range good {
		if got, err := Parse(s); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "M", "0", "-1M", "10 parsecs", "1.2.3M", "0.1", "1e3", "NaN", "2000P", "99999999999T"} {
		if n, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", s, n)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{1000: "1000", 1024: "1K", 16 << 20: "16M", 3 << 30: "3G", 1 << 40: "1T", 1536: "1536", 3 << 29: "1536M"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
		if back, err := Parse(Format(n)); err != nil || back != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	}
}

// FuzzParse holds Parse to its bounds: a size is at least one byte and at
// most Max, or an error.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"1", "64K", "1.5GiB", "2 g", "", "0", "1e9", "9999999999999T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err == nil && (n < 1 || n > Max) {
			t.Fatalf("Parse(%q) = %d", s, n)
		}
	})
}
