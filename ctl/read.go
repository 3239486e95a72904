package ctl

import (
	"errors"
	"io"
	"io/fs"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/capture"
)

func (e *env) readCommand() *cli.Command {
	flags := append(filterFlags(),
		&cli.StringSliceFlag{Name: "proxy", Usage: "keep events of these `PROXIES`"},
		&cli.Int64Flag{Name: "count", Usage: "stop after `N` events"},
		dataFlag(),
	)
	flags = append(flags, readNATSFlags()...)
	return &cli.Command{
		Name:      "read",
		Usage:     "show saved events with the same filters and formats as tail",
		ArgsUsage: "FILE... | nats://HOST:PORT",
		Description: "Reads files written by 'snoopctl save' or 'snoopctl tail -o json', in order;\n" +
			"- reads stdin, and gzip-compressed files are recognised. Rotated captures read\n" +
			"in order as FILE.1 FILE.2 ... FILE. A last line cut short (a capture that was\n" +
			"killed) gives a warning, not a failure. Drop notices in the file are always\n" +
			"shown. Text lines carry the date.\n\n" +
			"With nats://HOST:PORT, read replays the events a fleet exported to JetStream\n" +
			"(snoopd --export): from --since (default: all the stream keeps) to --until\n" +
			"(default: what it holds now), in order, with the same filters and output.\n\n" + filterHelp,
		Flags:  flags,
		Action: e.read,
	}
}

func (e *env) read(cCtx *cli.Context) error {
	files, err := args(cCtx, 1, -1, "FILE... (- for stdin)")
	if err != nil {
		return err
	}
	f, err := filterFromFlags(cCtx, cCtx.StringSlice("proxy"))
	if err != nil {
		return err
	}
	count := cCtx.Int64("count")
	if count < 0 {
		return usagef("--count %d is negative", count)
	}
	out := e.eventPrinter(e.stdio.Out, true, cCtx.Bool("data"))
	if len(files) == 1 && isNATSURL(files[0]) {
		return e.readNATS(cCtx, files[0], f.Request, count, out)
	}
	for _, name := range files {
		if isNATSURL(name) {
			return usagef("read takes files or one NATS URL, not both: %s", name)
		}
	}
	if len(cCtx.StringSlice("daemon")) > 0 {
		return usagef("--daemon applies to nats:// URLs; for files use --filter 'daemon == \"NAME\"'")
	}
	var shown int64
	for _, name := range files {
		done, err := e.readFile(name, func(r *capture.Reader) (bool, error) {
			// Every round consumes a line of a finite file.
			for {
				resp, err := r.Next()
				if err != nil {
					return false, err
				}
				if ev := resp.GetEvent(); ev != nil && !f.Match(ev) {
					continue
				}
				if err := out.print(resp); err != nil {
					return false, err
				}
				if resp.GetEvent() != nil {
					shown++
					if count > 0 && shown >= count {
						return true, nil
					}
				}
			}
		})
		if ferr := out.flush(); ferr != nil && err == nil {
			err = ferr
		}
		if err != nil || done {
			return err
		}
	}
	return nil
}

// readFile opens one capture and runs body over it. The end of the file is
// not an error, and a truncated last line is a warning.
func (e *env) readFile(name string, body func(*capture.Reader) (bool, error)) (bool, error) {
	r, err := capture.Open(name, e.stdio.In)
	if err != nil {
		var pe *fs.PathError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return false, failf("read %s: no such file", name)
		case errors.As(err, &pe):
			return false, failf("read %s: %v", name, pe.Err)
		}
		return false, failf("read %v", err)
	}
	defer r.Close()
	done, err := body(r)
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return done, nil
	case errors.Is(err, capture.ErrTruncated):
		e.warnf("%v", err)
		return false, nil
	case isCLIError(err):
		return false, err
	}
	return false, failf("read %v", err)
}
