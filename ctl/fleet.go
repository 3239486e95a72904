package ctl

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/daemon/export"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// eventSource is where tail, save and stats read live events: one daemon's
// watch stream, or with --from the events a fleet exports to NATS.
type eventSource interface {
	stream(ctx context.Context, o streamOptions, handle func(*snoopv1.WatchEventsResponse) error) (streamResult, error)
	Close()
}

// daemonSource is a daemon's watch stream for one request.
type daemonSource struct {
	e   *env
	c   *client
	req *snoopv1.WatchEventsRequest
}

func (s *daemonSource) stream(ctx context.Context, o streamOptions, handle func(*snoopv1.WatchEventsResponse) error) (streamResult, error) {
	return s.e.stream(ctx, s.c, s.req, o, handle)
}

func (s *daemonSource) Close() { s.c.Close() }

// natsLive is a NATS source used for live events.
type natsLive struct{ *natsSource }

func (s natsLive) stream(ctx context.Context, o streamOptions, handle func(*snoopv1.WatchEventsResponse) error) (streamResult, error) {
	return s.natsSource.stream(ctx, o, handle)
}

// openEvents connects to where req's events come from: --from's NATS
// server, or the daemon.
func (e *env) openEvents(cCtx *cli.Context, req *snoopv1.WatchEventsRequest) (eventSource, error) {
	var err error
	if e.nice, err = niceFromFlags(cCtx); err != nil {
		return nil, err
	}
	from := cCtx.String("from")
	if from == "" {
		if len(cCtx.StringSlice("daemon")) > 0 {
			return nil, usagef("--daemon selects daemons of a fleet: it needs --from nats://HOST:PORT")
		}
		if e.multi() {
			return e.openMany(cCtx.Context, req)
		}
		c, err := e.dial()
		if err != nil {
			return nil, err
		}
		if err := e.checkProxies(cCtx, c, cCtx.Command.Name, req.GetProxies()); err != nil {
			c.Close()
			return nil, err
		}
		return &daemonSource{e: e, c: c, req: req}, nil
	}
	if req.GetHistory() > 0 {
		return nil, usagef("--history asks a daemon for its recent events; from NATS, replay them with 'snoopctl read %s --since DURATION'", from)
	}
	s, err := e.openNATS(cCtx, from, req)
	if err != nil {
		return nil, err
	}
	return natsLive{s}, nil
}

// exportLine describes a daemon's export for snoopctl version, or "" when
// it exports nothing.
func exportLine(info *snoopv1.GetDaemonInfoResponse) string {
	x := info.GetExport()
	if x == nil {
		return ""
	}
	state := "connected"
	if !x.GetConnected() {
		state = "reconnecting"
	}
	where := x.GetSubjectPrefix() + "." + export.Token(info.GetName()) + ".>"
	if s := x.GetStream(); s != "" {
		where += " (stream " + s + ")"
	}
	return fmt.Sprintf("export: %s to %s on %s, %s: %d published, %d dropped, %d matched",
		info.GetName(), where, x.GetServers(), state, x.GetPublished(), x.GetDropped(), x.GetMatched())
}

// readNATS is read with a NATS URL: the events JetStream keeps, in order,
// with the same filters and output as read FILE, between since and until
// as read parsed and checked them.
func (e *env) readNATS(cCtx *cli.Context, rawURL string, req *snoopv1.WatchEventsRequest, since, until time.Time, count int64, out *eventPrinter) error {
	stream := cCtx.String("stream")
	if stream == "" || strings.ContainsAny(stream, " .*>") {
		return usagef("--stream %q: want the JetStream stream the daemons export to (their --export-stream, SNOOP by default)", stream)
	}
	s, err := e.openNATS(cCtx, rawURL, req)
	if err != nil {
		return err
	}
	defer s.Close()
	var shown int64
	err = s.replay(cCtx.Context, stream, since, until, func(r *snoopv1.WatchEventsResponse) (bool, error) {
		if err := out.print(r); err != nil {
			return false, err
		}
		shown++
		return count > 0 && shown >= count, nil
	})
	if ferr := out.flush(); ferr != nil && err == nil {
		err = ferr
	}
	return err
}

// readNATSFlags are read's flags for a NATS URL.
func readNATSFlags() []cli.Flag {
	return append(natsFlags(false),
		&cli.StringFlag{Name: "stream", Value: export.DefaultStream, Usage: "from NATS: the JetStream `STREAM` to replay (the daemons' --export-stream)"},
	)
}

// fleetHelp documents --from and reading from NATS.
const fleetHelp = "\n\nFrom a fleet: with --from nats://HOST:PORT the events come from the NATS server\n" +
	"the daemons export to (snoopd --export), each line naming its daemon after the\n" +
	"time. Proxy, event kind and operation filters become subjects, so NATS drops\n" +
	"what is not wanted; the other filters run here, in the daemon's matcher, with\n" +
	"daemon (--daemon, or CEL daemon == \"web-7\") known."
