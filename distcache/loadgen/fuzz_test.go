package loadgen

import "testing"

// FuzzParseMix checks that a parsed mix round-trips through String and has
// a positive weight, and that nothing panics.
func FuzzParseMix(f *testing.F) {
	for _, s := range []string{"add=1,get=3,remove=1,have=1", "get=1", "GET=2,add=0", "add=-1", "", "add=1,add=2", "x=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMix(s)
		if err != nil {
			return
		}
		total := 0
		for _, w := range m {
			if w < 0 {
				t.Fatalf("%q gave a negative weight %v", s, m)
			}
			total += w
		}
		if total <= 0 {
			t.Fatalf("%q parsed to a mix with no weight", s)
		}
		again, err := ParseMix(m.String())
		if err != nil || again != m {
			t.Fatalf("%q: String %q parses to %v, %v", s, m.String(), again, err)
		}
	})
}

// FuzzParseSizeRange checks that a range is ordered and positive.
func FuzzParseSizeRange(f *testing.F) {
	for _, s := range []string{"50-4096", "100", "0-1", "5-2", "-", "1-", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi, err := ParseSizeRange(s)
		if err == nil && (lo < 0 || hi < lo) {
			t.Fatalf("%q gave %d-%d without an error", s, lo, hi)
		}
	})
}
