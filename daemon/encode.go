package daemon

import (
	"strings"
	"unicode/utf8"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiwire"
	"github.com/snoopd/snoopd/proxy"
)

// NewEventEncoder returns the hub's Encoder: each event in the API's form
// (the conversion of apievent.Builder.Fill, the one every consumer has always
// seen), written by apiwire's hand encoder. The hub encodes each event once
// and every watch stream, the export and history share the bytes.
func NewEventEncoder() hub.Encoder { return new(eventEncoder) }

// eventEncoder reuses one set of API messages from event to event; it is
// not safe for concurrent use (the hub makes one per goroutine).
type eventEncoder struct {
	a    apiEvent
	data snoopv1.Event
	dtx  snoopv1.Transaction
}

func (c *eventEncoder) AppendEvent(dst []byte, e *proxy.Event, instance string) []byte {
	ev := c.a.Fill(e, false)
	ev.ProxyInstance = instance
	out, err := apiwire.AppendEvent(dst, ev)
	if err != nil {
		// A string that is not UTF-8 (an error quoting bytes off the
		// wire, say): a decoder would refuse the whole response, so the
		// event goes out with the bad bytes replaced.
		validUTF8(ev)
		out, _ = apiwire.AppendEvent(dst, ev)
	}
	return out
}

func (c *eventEncoder) AppendData(dst []byte, e *proxy.Event) []byte {
	if e.Kind != proxy.KindTransaction || e.Tx == nil || e.Tx.Data == nil {
		return dst
	}
	c.dtx.Data, c.dtx.DataTruncated = e.Tx.Data, e.Tx.DataTruncated
	c.data.Transaction = &c.dtx
	out, _ := apiwire.AppendEvent(dst, &c.data) // no strings: cannot fail
	c.dtx.Data = nil
	return out
}

// validUTF8 replaces what is not UTF-8 in ev's strings.
func validUTF8(ev *snoopv1.Event) {
	fix := func(s *string) {
		if !utf8.ValidString(*s) {
			*s = strings.ToValidUTF8(*s, "\uFFFD")
		}
	}
	fix(&ev.Proxy)
	fix(&ev.Client)
	fix(&ev.Error)
	fix(&ev.ProxyInstance)
	fix(&ev.Daemon)
	if t := ev.Transaction; t != nil {
		fix(&t.Result)
		fix(&t.Fault)
	}
	if c := ev.Closed; c != nil {
		fix(&c.Reason)
	}
	if p := ev.ProtocolError; p != nil {
		fix(&p.Rule)
		fix(&p.Direction)
		fix(&p.Field)
		fix(&p.Message)
	}
	if g := ev.CaptureGap; g != nil {
		fix(&g.Direction)
	}
}
