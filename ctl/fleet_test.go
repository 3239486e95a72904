package ctl

import (
	"slices"
	"testing"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func TestSubjectPatterns(t *testing.T) {
	get, add := snoopv1.Op_OP_GET, snoopv1.Op_OP_ADD
	for _, c := range []struct {
		daemons []string
		req     *snoopv1.WatchEventsRequest
		want    []string
	}{
		{nil, &snoopv1.WatchEventsRequest{}, []string{"snoop.>"}},
		{[]string{"web.7"}, &snoopv1.WatchEventsRequest{}, []string{"snoop.web_7.>"}},
		{nil, &snoopv1.WatchEventsRequest{Proxies: []string{"a", "b"}}, []string{"snoop.*.a.>", "snoop.*.b.>"}},
		{nil, &snoopv1.WatchEventsRequest{Ops: []snoopv1.Op{get, add}}, []string{"snoop.*.*.tx.get", "snoop.*.*.tx.add"}},
		{[]string{"d"}, &snoopv1.WatchEventsRequest{Proxies: []string{"p"}, Kinds: []snoopv1.EventKind{
			snoopv1.EventKind_EVENT_KIND_TRANSACTION, snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR}},
			[]string{"snoop.d.p.tx.>", "snoop.d.p.protocol"}},
		// Names that sanitise alike give one subscription, not two.
		{nil, &snoopv1.WatchEventsRequest{Proxies: []string{"a.b", "a_b"}}, []string{"snoop.*.a_b.>"}},
	} {
		if got := subjectPatterns("snoop", c.daemons, c.req); !slices.Equal(got, c.want) {
			t.Errorf("%v %v: got %q, want %q", c.daemons, c.req, got, c.want)
		}
	}
}

func TestValidSubscribePrefix(t *testing.T) {
	for s, ok := range map[string]bool{"snoop": true, "snoop.*": true, "a.*.b": true, "snoop.>": false, "sn*op": false, "": false, "a..b": false} {
		if validSubscribePrefix(s) != ok {
			t.Errorf("%q: want %v", s, ok)
		}
	}
}
