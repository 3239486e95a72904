package fdlimit

import (
	"math"
	"testing"
)

func TestReserveAndDataLimit(t *testing.T) {
	for _, tc := range []struct {
		limit   uint64
		reserve uint64
		data    int64
	}{
		{0, 0, 0},
		{20, 10, 10},
		{128, 64, 64},
		{256, 64, 192},
		{1024, 64, 960},
		{4096, 256, 3840},
		{65536, 4096, 61440},
		{1 << 20, 1 << 16, 1<<20 - 1<<16},
		{math.MaxUint64, math.MaxUint64 / 16, 0},
	} {
		if r := Reserve(tc.limit); r != tc.reserve {
			t.Errorf("Reserve(%d) = %d, want %d", tc.limit, r, tc.reserve)
		}
		if d := DataLimit(tc.limit); d != tc.data {
			t.Errorf("DataLimit(%d) = %d, want %d", tc.limit, d, tc.data)
		}
	}
}
