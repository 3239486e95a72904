package ctl

import (
	"flag"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/internal/duration"
)

// durationFlag is a cli.DurationFlag read by package duration, so that
// snoopctl reads a duration, and refuses one, as snoopd and dcload do.
// With seconds set it also takes a bare number as seconds: the refresh
// intervals (top -d 2, as in top(1); stats --interval 2).
type durationFlag struct {
	*cli.DurationFlag
	seconds bool
}

// secondsFlag is a duration flag that takes a bare number as seconds.
func secondsFlag(f *cli.DurationFlag) *durationFlag {
	return &durationFlag{DurationFlag: f, seconds: true}
}

// Apply defines the flag under each of its names. urfave/cli copies a
// value given under one name to the others after parsing, through
// String, which writes Go's form that time.ParseDuration (and so
// cli.Context.Duration) reads back.
func (f *durationFlag) Apply(set *flag.FlagSet) error {
	if len(f.EnvVars) > 0 || f.FilePath != "" {
		// No duration flag of snoopctl reads the environment; one that
		// did would need duration's parsing here too.
		return fmt.Errorf("duration flag --%s: environment variables are not read", f.Name)
	}
	for _, name := range f.Names() {
		p := f.Destination
		if p == nil {
			p = new(time.Duration)
		}
		*p = f.Value
		set.Var(duration.Value{D: p, Seconds: f.seconds}, name, f.Usage)
	}
	return nil
}

// readDurations makes every plain cli.DurationFlag of flags a
// durationFlag, so that commands defined anywhere read durations one way.
func readDurations(flags []cli.Flag) {
	for i, f := range flags {
		if d, ok := f.(*cli.DurationFlag); ok {
			flags[i] = &durationFlag{DurationFlag: d}
		}
	}
}

// readCommandDurations is readDurations for c and its subcommands.
func readCommandDurations(c *cli.Command) {
	readDurations(c.Flags)
	for _, s := range c.Subcommands {
		readCommandDurations(s)
	}
}
