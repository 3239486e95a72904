package ctl

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
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

// clientVersion is snoopctl's module version and VCS revision, as the Go
// toolchain recorded them in the binary.
type clientVersion struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Go       string `json:"go"`
}

func buildVersion() clientVersion {
	v := clientVersion{Version: "unknown", Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Version = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Revision = s.Value
			}
		}
	}
	return v
}

func (e *env) version(cCtx *cli.Context) error {
	if _, err := args(cCtx, 0, 0, ""); err != nil {
		return err
	}
	cv := buildVersion()
	if !e.opts.json {
		rev := ""
		if cv.Revision != "" {
			rev = ", revision " + cv.Revision
		}
		fmt.Fprintf(e.stdio.Out, "client: snoopctl %s (%s%s)\n", cv.Version, cv.Go, rev)
	}
	return e.withClient(func(c *client) error {
		ctx, cancel := e.callContext(cCtx.Context, 0)
		defer cancel()
		info, err := c.daemon.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
		if err != nil {
			return e.rpcError(err, "version", "")
		}
		if e.opts.json {
			d, err := format.RawJSON(info)
			if err != nil {
				return failf("%v", err)
			}
			b, err := json.Marshal(struct {
				Client clientVersion   `json:"client"`
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
		_, err = fmt.Fprintf(e.stdio.Out, "daemon: snoopd %s at %s%s, %d proxies, %d watchers, engine %s%s\n",
			info.GetVersion(), e.display(), up, info.GetProxies(), info.GetWatchers(), engine, fdLimit)
		if line := exportLine(info); line != "" && err == nil {
			_, err = fmt.Fprintln(e.stdio.Out, line)
		}
		return err
	})
}
