package ctl

import (
	"cmp"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/internal/duration"
)

func (e *env) readCommand() *cli.Command {
	flags := append(filterFlags(),
		&cli.Int64Flag{Name: "count", Usage: "stop after `N` events"},
	)
	flags = append(flags, timeFlags()...)
	flags = append(flags, dataFlag())
	flags = append(flags, packetFlags()...)
	flags = append(flags, readNATSFlags()...)
	return &cli.Command{
		Name:      "read",
		Usage:     "show saved events with the same filters and formats as tail",
		ArgsUsage: "FILE... | nats://HOST:PORT",
		Description: "Reads files written by 'snoopctl save' or 'snoopctl tail -o json', in order;\n" +
			"- reads stdin, and gzip-compressed files are recognised. The files of one\n" +
			"rotated capture (FILE.N ... FILE.1 FILE, as save --rotate-size writes them) are\n" +
			"read in time order whatever order they are given in, so 'read FILE*' works;\n" +
			"if the times of consecutive files overlap, a warning says so. A last line cut\n" +
			"short (a capture that was killed) gives a warning, not a failure. Drop notices\n" +
			"in the file are always shown. Text lines carry the date. At the end a summary\n" +
			"on stderr gives the events, drops, the time they span and the rate, and the\n" +
			"transactions by operation and result.\n\n" +
			"With nats://HOST:PORT, read replays the events a fleet exported to JetStream\n" +
			"(snoopd --export): from --since (default: all the stream keeps) to --until\n" +
			"(default: what it holds now), in order, with the same filters and output.\n\n" +
			"A FILE that is a tcpdump capture (pcap or pcapng, gzip-compressed or not;\n" +
			"Ethernet, Linux cooked v1 and v2, loopback or raw IP; IPv4 and IPv6) is decoded\n" +
			"as a proxy in front of the server would have decoded the traffic: --server ADDR\n" +
			"says which end is the server (a bare port: any address with that port), and\n" +
			"the events name the proxy --name, or the file's base name. TCP is reassembled\n" +
			"from the packets; bytes the capture missed (lost, or cut by the snap length)\n" +
			"are capture-gap events, after which that direction resumes at the next message\n" +
			"start, so no transaction is made of a guess. The summary adds the packets read,\n" +
			"connections, capture gaps and bytes skipped.\n\n" + filterHelp,
		Flags:  flags,
		Action: e.read,
	}
}

func (e *env) read(cCtx *cli.Context) (err error) {
	files, err := args(cCtx, 1, -1, "FILE... (- for stdin)")
	if err != nil {
		return err
	}
	f, err := filterFromFlags(cCtx, nil)
	if err != nil {
		return err
	}
	count := cCtx.Int64("count")
	if count < 0 {
		return usagef("--count %d is negative", count)
	}
	since, until, err := e.timeRange(cCtx)
	if err != nil {
		return err
	}
	out := e.eventPrinter(e.stdio.Out, true, cCtx.Bool("data"))
	fr, err := newFileReading(cCtx, cCtx.Bool("data"))
	if err != nil {
		return err
	}
	if len(files) == 1 && isNATSURL(files[0]) {
		return e.readNATS(cCtx, files[0], f.Request, since, until, count, out)
	}
	for _, name := range files {
		if isNATSURL(name) {
			return usagef("read takes files or one NATS URL, not both: %s", name)
		}
	}
	if len(cCtx.StringSlice("daemon")) > 0 {
		return usagef("--daemon applies to nats:// URLs; for files use --filter 'daemon == \"NAME\"'")
	}
	sum := newSummary()
	var shown int64
	defer func() {
		// A read that failed before it showed anything has nothing to sum up.
		if err == nil || shown > 0 {
			sum.write(e.stdio.Err, "shown", sum.span())
			fr.writePackets(e.stdio.Err)
		}
	}()
	var prevName string
	var prevLast time.Time // the last event time of the file before
	warned := false
	for _, name := range rotationOrder(files) {
		var first, last time.Time
		done, err := e.readFile(name, fr, func(r eventFile) (bool, error) {
			// Every round consumes a line of a finite file.
			for {
				resp, err := r.Next()
				if err != nil {
					return false, err
				}
				if ev := resp.GetEvent(); ev != nil {
					if ts := format.EventTime(ev); ts != nil {
						at := ts.AsTime()
						if first.IsZero() {
							first = at
						}
						last = at
						if !inRange(at, since, until) {
							continue
						}
					}
					if !f.Match(ev) {
						continue
					}
				}
				if err := out.print(resp); err != nil {
					return false, err
				}
				sum.add(resp)
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
		if !warned && !first.IsZero() && !prevLast.IsZero() && first.Before(prevLast) {
			warned = true
			e.warnf("the times of %s and %s overlap (%s starts before %s ends): the events are not in time order",
				prevName, name, name, prevName)
		}
		if !last.IsZero() {
			prevName, prevLast = name, last
		}
	}
	return nil
}

// rotationOrder puts the files of one rotated capture in time order, the
// highest FILE.N first and FILE last, where the first of them was given;
// other files keep their places. The shell's FILE* gives FILE FILE.1
// FILE.10 FILE.2 ..., which is no order at all.
func rotationOrder(files []string) []string {
	rotation := func(name string) (base string, n int) {
		i := strings.LastIndexByte(name, '.')
		if i < 0 {
			return name, 0
		}
		k, err := strconv.Atoi(name[i+1:])
		if err != nil || k <= 0 || strconv.Itoa(k) != name[i+1:] {
			return name, 0
		}
		return name[:i], k
	}
	groups := map[string][]string{}
	for _, f := range files {
		base, _ := rotation(f)
		groups[base] = append(groups[base], f)
	}
	var out []string
	placed := map[string]bool{}
	for _, f := range files {
		base, _ := rotation(f)
		if placed[base] {
			continue
		}
		placed[base] = true
		g := groups[base]
		slices.SortStableFunc(g, func(a, b string) int {
			// The highest N first, the live FILE (N 0) last.
			key := func(name string) int {
				if _, n := rotation(name); n > 0 {
					return n
				}
				return -1
			}
			return cmp.Compare(key(b), key(a))
		})
		out = append(out, g...)
	}
	return out
}

// timeFlags are the time window of the saved events read and plot keep.
func timeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "since", Usage: "keep events from `TIME` on: 2026-03-14T15:04:05Z, '2026-03-14 15:04:05', 15:04:05 (today), or a duration ago (10m)"},
		&cli.StringFlag{Name: "until", Usage: "keep events before `TIME` (the forms of --since)"},
	}
}

// timeRange reads --since and --until; a zero time is no bound.
func (e *env) timeRange(cCtx *cli.Context) (since, until time.Time, err error) {
	if since, err = e.parseWhen(cCtx, "since"); err != nil {
		return since, until, err
	}
	if until, err = e.parseWhen(cCtx, "until"); err != nil {
		return since, until, err
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		return since, until, usagef("--until %s is not after --since %s", cCtx.String("until"), cCtx.String("since"))
	}
	return since, until, nil
}

// inRange reports whether an event at t is within [since, until).
func inRange(t, since, until time.Time) bool {
	return (since.IsZero() || !t.Before(since)) && (until.IsZero() || t.Before(until))
}

// parseWhen reads --since or --until: an RFC 3339 time, a date and time,
// a time of day (today, in the zone shown), or a duration ago.
func (e *env) parseWhen(cCtx *cli.Context, flag string) (time.Time, error) {
	s := cCtx.String(flag)
	if s == "" {
		return time.Time{}, nil
	}
	loc := e.location()
	if d, err := duration.Parse(s); err == nil && d >= 0 {
		return e.now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	if t, err := time.ParseInLocation("15:04:05.999999999", s, loc); err == nil {
		y, m, d := e.now().In(loc).Date()
		return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), loc), nil
	}
	return time.Time{}, usagef("--%s %q: want a time such as 2026-03-14T15:04:05Z, '2026-03-14 15:04:05' or 15:04:05, or a duration ago such as 10m", flag, s)
}

// readFile opens one file of events, a JSON capture or a packet capture
// (fr says how to read those), and runs body over it. The end of the file
// is not an error, and a file cut short is a warning.
func (e *env) readFile(name string, fr *fileReading, body func(eventFile) (bool, error)) (bool, error) {
	r, err := fr.open(name, e.stdio.In)
	if err != nil {
		var pe *fs.PathError
		switch {
		case isCLIError(err):
			return false, err
		case errors.Is(err, fs.ErrNotExist):
			return false, failf("read %s: no such file", name)
		case errors.As(err, &pe):
			return false, failf("read %s: %v", name, pe.Err)
		}
		return false, failf("read %v", err)
	}
	defer r.Close()
	done, err := body(r)
	fr.done(r)
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return done, nil
	case isTruncated(err):
		e.warnf("%v", err)
		return false, nil
	case isCLIError(err):
		return false, err
	}
	return false, failf("read %v", err)
}
