package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPrefixCutsOnACharacterBoundary(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"", 4, ""},
		{"abcd", 4, "abcd"},
		{"abcde", 4, "abcd"},
		{"abcé", 4, "abc"},  // é is two bytes: 4 would split it
		{"abécd", 3, "ab"},  // likewise
		{"abécd", 4, "abé"}, // ends right after it
		{"€uro", 2, ""},     // nothing fits before the first character's end
		{"a€uro", 3, "a"},
	} {
		if got := Prefix(c.s, c.n); got != c.want {
			t.Errorf("Prefix(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}

func TestQuoteSaysHowLongTheTextWas(t *testing.T) {
	if got := Quote("short", 8); got != "short" {
		t.Errorf("Quote of a short text = %q, want it whole", got)
	}
	if got := Quote("0123456789ab", 4); got != "0123…(12 bytes)" {
		t.Errorf("Quote = %q, want %q", got, "0123…(12 bytes)")
	}
	long := strings.Repeat("é", 100)
	if got := Quote(long, 5); got != "éé…(200 bytes)" || !utf8.ValidString(got) {
		t.Errorf("Quote of a long text = %q", got)
	}
}
