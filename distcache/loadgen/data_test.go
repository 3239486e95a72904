package loadgen

import (
	"bytes"
	"testing"
)

func TestDataDerivation(t *testing.T) {
	key := dataKey(1, "p-")
	for s := range 50 {
		for v := uint32(1); v < 4; v++ {
			sp := specFor(key, s, v, 2, 5000)
			if sp.n < 2 || sp.n > 5000 {
				t.Fatalf("length %d outside 2..5000", sp.n)
			}
			d := appendData(nil, sp)
			if len(d) != sp.n {
				t.Fatalf("appendData gave %d bytes, want %d", len(d), sp.n)
			}
			if !bytes.Equal(d, appendData(nil, specFor(key, s, v, 2, 5000))) {
				t.Fatal("data is not deterministic")
			}
			if at := diffData(d, sp); at != -1 {
				t.Fatalf("diffData of the right data = %d, want -1", at)
			}
			for _, i := range []int{0, len(d) / 2, len(d) - 1} {
				bad := bytes.Clone(d)
				bad[i] ^= 0x40
				if at := diffData(bad, sp); at != i {
					t.Fatalf("byte %d changed, diffData = %d", i, at)
				}
			}
			if at := diffData(d[:len(d)-1], sp); at != len(d)-1 {
				t.Fatalf("short data: diffData = %d, want %d", at, len(d)-1)
			}
			if at := diffData(append(bytes.Clone(d), 0), sp); at != len(d) {
				t.Fatalf("long data: diffData = %d, want %d", at, len(d))
			}
		}
	}
	// Other versions, sessions and runs give other data.
	a := appendData(nil, specFor(key, 3, 1, 100, 100))
	for _, sp := range []dataSpec{specFor(key, 3, 2, 100, 100), specFor(key, 4, 1, 100, 100), specFor(dataKey(1, "q-"), 3, 1, 100, 100)} {
		if diffData(a, sp) == -1 {
			t.Errorf("data of %+v equals another session's", sp)
		}
	}
}
