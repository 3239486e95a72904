// Package labels checks proxy labels and selects proxies by them. Keys,
// values and selectors follow Kubernetes' rules, so that what an operator
// knows from kubectl (owner=ci, tier!=test, !canary) means the same here.
// snoopd checks labels and prune selectors with it; snoopctl parses its
// --label and -l flags with it and filters list's answer by the same
// selector.
package labels

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Limits on labels.
const (
	// MaxLabels bounds the labels of one proxy: they travel in every
	// answer that carries it.
	MaxLabels = 64
	// maxName bounds a key's name part and a value, as Kubernetes does.
	maxName = 63
	// maxPrefix bounds a key's prefix, a DNS subdomain.
	maxPrefix = 253
)

var (
	namePattern   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	prefixPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// quote is %q of what was given, clipped so that a huge key makes a short
// error.
func quote(s string) string {
	if len(s) > 80 {
		return strconv.Quote(s[:80]) + "…"
	}
	return strconv.Quote(s)
}

// ValidateKey checks a label key: an optional prefix (a lower-case DNS
// subdomain of at most 253 characters) and '/', then a name of 1 to 63
// letters, digits, '-', '_' or '.' that begins and ends with a letter or
// digit.
func ValidateKey(k string) error {
	name := k
	if i := strings.IndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		switch {
		case prefix == "":
			return fmt.Errorf("key %s: the prefix before '/' is empty", quote(k))
		case len(prefix) > maxPrefix:
			return fmt.Errorf("key %s: the prefix is %d characters; at most %d", quote(k), len(prefix), maxPrefix)
		case !prefixPattern.MatchString(prefix):
			return fmt.Errorf("key %s: the prefix must be a lower-case DNS name (example: example.com/owner)", quote(k))
		}
	}
	switch {
	case name == "":
		return fmt.Errorf("key %s: the name is empty", quote(k))
	case len(name) > maxName:
		return fmt.Errorf("key %s: the name is %d characters; at most %d", quote(k), len(name), maxName)
	case !namePattern.MatchString(name):
		return fmt.Errorf("key %s: want letters, digits, '-', '_' or '.', beginning and ending with a letter or digit", quote(k))
	}
	return nil
}

// ValidateValue checks a label value: empty, or 1 to 63 letters, digits,
// '-', '_' or '.' that begins and ends with a letter or digit.
func ValidateValue(v string) error {
	switch {
	case v == "":
		return nil
	case len(v) > maxName:
		return fmt.Errorf("value %s: %d characters; at most %d", quote(v), len(v), maxName)
	case !namePattern.MatchString(v):
		return fmt.Errorf("value %s: want letters, digits, '-', '_' or '.', beginning and ending with a letter or digit", quote(v))
	}
	return nil
}

// Validate checks a proxy's labels. The error names the first bad key in
// sorted order, so that the same map always gets the same error.
func Validate(m map[string]string) error {
	if len(m) > MaxLabels {
		return fmt.Errorf("%d labels; at most %d", len(m), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := ValidateKey(k); err != nil {
			return err
		}
		if err := ValidateValue(m[k]); err != nil {
			return fmt.Errorf("label %s: %w", quote(k), err)
		}
	}
	return nil
}

// ParseLabel reads one "key=value" (the value may be empty, "key=").
func ParseLabel(s string) (key, value string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("%s: want key=value (example: owner=ci)", quote(s))
	}
	if err := ValidateKey(k); err != nil {
		return "", "", err
	}
	if err := ValidateValue(v); err != nil {
		return "", "", err
	}
	return k, v, nil
}

// String writes labels as "k=v,k2=v2", sorted by key; "" for none.
func String(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(m[k])
	}
	return b.String()
}

// op is what one requirement of a selector asks of a label.
type op int

const (
	opEquals op = iota
	opNotEquals
	opExists
	opNotExists
)

// requirement is one comma-separated part of a selector.
type requirement struct {
	key, value string
	op         op
}

func (r requirement) matches(m map[string]string) bool {
	v, ok := m[r.key]
	switch r.op {
	case opEquals:
		return ok && v == r.value
	case opNotEquals:
		return !ok || v != r.value
	case opExists:
		return ok
	default:
		return !ok
	}
}

func (r requirement) String() string {
	switch r.op {
	case opEquals:
		return r.key + "=" + r.value
	case opNotEquals:
		return r.key + "!=" + r.value
	case opExists:
		return r.key
	default:
		return "!" + r.key
	}
}

// Selector selects labelled things by Kubernetes' equality-based
// selectors. The zero Selector selects everything.
type Selector struct {
	reqs []requirement
}

// ParseSelector reads a selector: comma-separated requirements that must
// all hold, each "key=value" or "key==value", "key!=value" (the label is
// absent or has another value), "key" (present) or "!key" (absent).
// Spaces around the parts are ignored. "" is the empty selector, which
// selects everything. Kubernetes' set-based forms ("key in (a,b)") are
// not taken.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		var r requirement
		switch {
		case part == "":
			return Selector{}, fmt.Errorf("selector %s: an empty requirement (want key=value, key!=value, key or !key, separated by commas)", quote(s))
		case strings.Contains(part, "!="):
			r.op = opNotEquals
			r.key, r.value, _ = strings.Cut(part, "!=")
		case strings.Contains(part, "=="):
			r.key, r.value, _ = strings.Cut(part, "==")
		case strings.Contains(part, "="):
			r.key, r.value, _ = strings.Cut(part, "=")
		case strings.HasPrefix(part, "!"):
			r.op = opNotExists
			r.key = strings.TrimSpace(part[1:])
		default:
			if strings.ContainsAny(part, " ()") {
				return Selector{}, fmt.Errorf("selector %s: %s is not a requirement; only key=value, key!=value, key and !key are taken (no set-based 'in' or 'notin')", quote(s), quote(part))
			}
			r.op = opExists
			r.key = part
		}
		r.key, r.value = strings.TrimSpace(r.key), strings.TrimSpace(r.value)
		if err := ValidateKey(r.key); err != nil {
			return Selector{}, fmt.Errorf("selector %s: %w", quote(s), err)
		}
		if err := ValidateValue(r.value); err != nil {
			return Selector{}, fmt.Errorf("selector %s: %w", quote(s), err)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// Empty reports whether the selector selects everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// Matches reports whether labels m meet every requirement.
func (s Selector) Matches(m map[string]string) bool {
	for _, r := range s.reqs {
		if !r.matches(m) {
			return false
		}
	}
	return true
}

// String writes the selector in its canonical form.
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}
