// Package clip shortens text that an error message quotes, so that a
// 3 MiB name or address makes a short error: the daemon's API errors and
// distcache's address errors cut what they echo the same way.
package clip

import (
	"strconv"
	"unicode/utf8"
)

// Prefix returns s cut to at most n bytes, on a character boundary so that
// the result is valid UTF-8 where s is.
func Prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// Quote returns s when it is at most n bytes long, and otherwise its
// Prefix followed by how long it was: "abc…(12 bytes)".
func Quote(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return Prefix(s, n) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
