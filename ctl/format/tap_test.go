package format

import (
	"bytes"
	"strings"
	"testing"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func tapProxy() *snoopv1.Proxy {
	return &snoopv1.Proxy{
		Spec:  &snoopv1.ProxySpec{Name: "lo-tap", TapInterface: "lo", Server: "IP:127.0.0.1:9000"},
		Kind:  snoopv1.ProxyKind_PROXY_KIND_TAP,
		State: snoopv1.ProxyState_PROXY_STATE_LISTENING,
		Counters: &snoopv1.ProxyCounters{ConnectionsActive: 1, ConnectionsTotal: 4, Transactions: 12,
			Tap: &snoopv1.TapCounters{KernelPackets: 90, KernelDrops: 2, CaptureGaps: 1, CaptureMissingBytes: 1448,
				Resyncs: 3, ResyncSkippedBytes: 20, ReadErrors: 1, LastReadError: "network is down"}},
	}
}

// TestListShowsKindAndMissedWhenThereIsATap: list adds KIND and MISSED
// when a tap is among the proxies; a tap captures where a proxy listens.
func TestListShowsKindAndMissedWhenThereIsATap(t *testing.T) {
	var b bytes.Buffer
	px := &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "web", Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:9000"},
		ListenAddress: "IP:127.0.0.1:40001", Kind: snoopv1.ProxyKind_PROXY_KIND_PROXY, State: snoopv1.ProxyState_PROXY_STATE_LISTENING,
		Counters: &snoopv1.ProxyCounters{}}
	if err := WriteProxyList(&b, []*snoopv1.Proxy{tapProxy(), px}); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"NAME     KIND     LISTEN               SERVER              STATE       CONNS   TRANSACTIONS   ERRORS   MISSED\n" +
		"lo-tap   tap lo   -                    IP:127.0.0.1:9000   capturing   1       12             0        2 pkts, 1.4 KiB\n" +
		"web      proxy    IP:127.0.0.1:40001   IP:127.0.0.1:9000   listening   0       0              0        -\n"
	if b.String() != want {
		t.Errorf("list:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := WriteProxyList(&b, []*snoopv1.Proxy{px}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "KIND") {
		t.Errorf("a list without taps has a KIND column:\n%s", b.String())
	}
}

// TestShowOfATapSaysWhatItSawAndMissed: show of a tap names its kind and
// interface, and its capture's counts instead of a proxy's settings.
func TestShowOfATapSaysWhatItSawAndMissed(t *testing.T) {
	var b bytes.Buffer
	if err := WriteProxy(&b, tapProxy(), nil, time.Unix(0, 0), time.UTC); err != nil {
		t.Fatal(err)
	}
	// The columns' width is the table's; the words are the test's.
	out := strings.Join(strings.FieldsFunc(b.String(), func(r rune) bool { return r == ' ' }), " ")
	for _, want := range []string{
		"kind: tap on lo: captures the server's traffic, forwards nothing\n",
		"state: capturing\n",
		"packets: 90 captured, 2 dropped by the kernel (its ring was full)\n",
		"missed: 1 capture gap, 1.4 KiB missing; 3 resyncs, 20 B skipped\n",
		"read errors: 1 (last: network is down)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"listen:", "on corrupt:", "spare conns:", "live connections:"} {
		if strings.Contains(out, not) {
			t.Errorf("show of a tap has %q:\n%s", not, out)
		}
	}
}
