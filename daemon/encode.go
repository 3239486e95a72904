package daemon

import (
	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/internal/apievent"
)

// NewEventEncoder returns the hub's Encoder: each event in the API's form
// (the conversion of apievent.Builder.Fill, the one every consumer has always
// seen), written straight from the proxy's event by an apievent.WireEncoder.
// The hub encodes each event once and every watch stream, the export and
// history share the bytes.
func NewEventEncoder() hub.Encoder { return new(apievent.WireEncoder) }
