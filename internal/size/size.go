// Package size reads and writes byte counts the one way every flag of
// snoopd and snoopctl takes them: a number with an optional unit, where K,
// M, G and T (also written KB, KiB, MB, MiB, ...) are powers of 1024, as
// memory and buffer sizes are, and as systemd, NATS and docker read them.
// One rule everywhere means "10M" is the same amount whichever flag takes
// it.
package size

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// units maps the unit suffixes Parse takes, lower-cased, to their factors.
var units = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}

// Max is the largest size Parse accepts: far above any buffer or disk.
const Max = 1 << 60

// Parse reads a size such as "500000", "64K", "10MB", "1.5GiB" or
// "2 g" (case-insensitive). It must come to at least one byte; a
// fraction of a byte is dropped.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	factor, ok := units[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit K, M, G or T (powers of 1024), such as 64K or 10M", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q: %q is not a number", s, num)
	}
	n := v * float64(factor)
	if n < 1 || n > Max {
		return 0, fmt.Errorf("size %q: must be at least 1 byte and at most 1024P", s)
	}
	return int64(n), nil
}

// Format writes n in the largest unit that divides it, as Parse reads it
// back: "16M", "64K", "1000".
func Format(n int64) string {
	for _, u := range []struct {
		name  string
		bytes int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.bytes && n%u.bytes == 0 {
			return strconv.FormatInt(n/u.bytes, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}
