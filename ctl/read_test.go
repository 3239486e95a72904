package ctl

import (
	"slices"
	"testing"
)

func TestRotationOrder(t *testing.T) {
	// As the shell expands "c.jsonl*": no order at all.
	in := []string{"a.jsonl", "c.jsonl", "c.jsonl.1", "c.jsonl.10", "c.jsonl.2", "b.jsonl.x", "c.jsonl.9"}
	want := []string{"a.jsonl", "c.jsonl.10", "c.jsonl.9", "c.jsonl.2", "c.jsonl.1", "c.jsonl", "b.jsonl.x"}
	if got := rotationOrder(in); !slices.Equal(got, want) {
		t.Errorf("rotationOrder(%v) = %v, want %v", in, got, want)
	}
}
