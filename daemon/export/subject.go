package export

import (
	"strings"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/vocab"
)

// Token makes s one subject token: NATS splits subjects at '.', and '*'
// and '>' are wildcards, so they and white space become '_'; an empty
// token is '_' as well (a subject may not have one).
func Token(s string) string {
	if s == "" {
		return "_"
	}
	if !strings.ContainsFunc(s, badRune) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if badRune(r) {
			return '_'
		}
		return r
	}, s)
}

func badRune(r rune) bool {
	switch r {
	case '.', '*', '>', ' ', '\t', '\r', '\n', '\f', '\v', 0x85, 0xa0:
		return true
	}
	return r < 0x20 || r == 0x7f
}

// Subject is the subject of an event: PREFIX.DAEMON.PROXY.KIND, plus .OP
// for a transaction whose operation is known. prefix is used as given (it
// may hold several tokens); the other parts go through Token.
func Subject(prefix, daemon, proxyName string, kind vocab.Kind, op distcache.Op, hasOp bool) string {
	s := prefix + "." + Token(daemon) + "." + Token(proxyName) + "." + kind.Short()
	if kind == vocab.KindTransaction && hasOp && op.Valid() {
		s += "." + vocab.OpName(op)
	}
	return s
}

// Filter is the subject pattern that selects events by daemon, proxy,
// kind and operation; an empty value is the wildcard. A pattern with
// only a prefix selects everything under it.
func Filter(prefix, daemon, proxyName, kind, op string) string {
	tok := func(s string) string {
		if s == "" {
			return "*"
		}
		return Token(s)
	}
	switch {
	case op != "":
		return prefix + "." + tok(daemon) + "." + tok(proxyName) + "." + vocab.KindTransaction.Short() + "." + Token(op)
	case kind != "":
		s := prefix + "." + tok(daemon) + "." + tok(proxyName) + "." + Token(kind)
		if kind == vocab.KindTransaction.Short() {
			return s + ".>"
		}
		return s
	case proxyName != "":
		return prefix + "." + tok(daemon) + "." + Token(proxyName) + ".>"
	case daemon != "":
		return prefix + "." + Token(daemon) + ".>"
	}
	return prefix + ".>"
}

// ValidPrefix checks a subject prefix: one or more tokens, none empty and
// none a wildcard.
func ValidPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, t := range strings.Split(p, ".") {
		if t == "" || strings.ContainsFunc(t, badRune) {
			return false
		}
	}
	return true
}
