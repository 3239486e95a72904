package format

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// A fault's table line says when its duration ends, or that it has.
func TestFaultTableShowsTheEnd(t *testing.T) {
	mk := func(name string, ends time.Time) *snoopv1.Fault {
		return &snoopv1.Fault{Name: name, Type: snoopv1.FaultType_FAULT_TYPE_MISS, Duration: durationpb.New(time.Hour), EndsAt: timestamppb.New(ends)}
	}
	future := time.Date(2999, 1, 2, 3, 4, 5, 600, time.UTC)
	var b bytes.Buffer
	if err := WriteFaults(&b, []*snoopv1.Fault{mk("coming", future), mk("past", base)}, nil, ""); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"for 1h until 2999-01-02T03:04:05Z", "for 1h, ended 2026-03-14T15:09:26Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("fault table lacks %q:\n%s", want, out)
		}
	}
}
