package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/version"
)

func (e *env) versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print snoopctl's version and the daemon's",
		Description: "The client's version is printed first, so it is there even when the daemon\n" +
			"cannot be reached.\n\n" +
			"-o json prints {\"client\": {\"version\", \"revision\", \"go\"}, \"daemon\":\n" +
			"snoop.v1.GetDaemonInfoResponse}.",
		Action: e.version,
	}
}

func (e *env) version(cCtx *cli.Context) error {
	if _, err := args(cCtx, 0, 0, ""); err != nil {
		return err
	}
	cv := version.Get()
	if !e.opts.json {
		fmt.Fprintf(e.stdio.Out, "client: %s\n", clientVersionLine(cv))
	}
	info, err := unary(e, cCtx.Context, "version", "", func(ctx context.Context, c *client) (*snoopv1.GetDaemonInfoResponse, error) {
		return c.daemon.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	})
	if err != nil {
		return err
	}
	if e.opts.json {
		d, err := format.RawJSON(info)
		if err != nil {
			return failf("%v", err)
		}
		b, err := json.Marshal(struct {
			Client version.Info    `json:"client"`
			Daemon json.RawMessage `json:"daemon"`
		}{cv, d})
		if err != nil {
			return failf("encode version: %v", err)
		}
		_, err = fmt.Fprintf(e.stdio.Out, "%s\n", b)
		return err
	}
	up := ""
	if t := info.GetStartTime(); t != nil {
		up = fmt.Sprintf(", up %s", format.Age(e.now().Sub(t.AsTime())))
	}
	engine := info.GetEngine()
	if info.GetLoops() > 0 {
		engine = fmt.Sprintf("%s, %d loop", engine, info.GetLoops())
		if info.GetLoops() > 1 {
			engine += "s"
		}
	}
	if engine == "" {
		engine = "unknown" // a daemon from before engines were reported
	}
	fdLimit := ""
	if n := info.GetFdLimit(); n > 0 {
		fdLimit = fmt.Sprintf(", open-file limit %d", n)
	}
	_, err = fmt.Fprintf(e.stdio.Out, "daemon: snoopd %s at %s%s, %s, %s, engine %s%s\n",
		info.GetVersion(), e.display(), up, count(int64(info.GetProxies()), "proxy", "proxies"),
		count(int64(info.GetWatchers()), "watcher", "watchers"), engine, fdLimit)
	if line := exportLine(info); line != "" && err == nil {
		_, err = fmt.Fprintln(e.stdio.Out, line)
	}
	return err
}

// clientVersionLine is snoopctl's version as --version and the version
// command print it: "snoopctl 1.2.3 (go1.26.0, revision abc…, modified)".
func clientVersionLine(v version.Info) string {
	extra := v.Go
	if v.Revision != "" && !strings.HasPrefix(v.Revision, strings.TrimSuffix(v.Version, "-dirty")) {
		extra += ", revision " + v.Revision
	}
	if v.Modified {
		extra += ", modified"
	}
	return fmt.Sprintf("snoopctl %s (%s)", v.Version, extra)
}
