package ctl

import "testing"

func TestCompletionOffersWhatStatsCountsBy(t *testing.T) {
	_, addr := startFake(t)
	if got := complete(t, "-a", addr, "stats", "--by"); got != "session\n" {
		t.Errorf("completion of stats --by: %q, want session", got)
	}
}
