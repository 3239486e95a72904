package capture

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits maps the unit suffixes ParseSize takes, lower-cased, to their
// factors: decimal (kB, MB, GB) as disk makers and most people mean them,
// binary (KiB, MiB, GiB) when asked for by name.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseSize parses a size such as "500000", "10MB", "1.5GiB" or "64k"
// (case-insensitive; k, M, G are powers of 1000, KiB, MiB, GiB of 1024).
// The size must be positive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	factor, ok := sizeUnits[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit: B, kB, MB, GB, KiB, MiB, GiB (for example 10MB)", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %q is not a number", s, num)
	}
	bytes := v * float64(factor)
	if bytes < 1 || bytes > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q: must be at least 1 byte and at most a few exabytes", s)
	}
	return int64(bytes), nil
}
