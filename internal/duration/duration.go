// Package duration reads durations the one way every flag of snoopd,
// snoopctl and dcload takes them, and says the same thing about a bad
// one everywhere. A duration is Go's form (500ms, 2s, 1m30s); a bare
// number other than 0 is refused, because "5" could be seconds or
// milliseconds, except where a tool's users type seconds (top's -d 2, as
// in top(1)), which ParseSeconds reads.
package duration

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Want is what a duration flag wants: the reason every tool gives for a
// value it cannot read.
const Want = "want a duration with a unit, such as 500ms, 2s or 5m"

// WantSeconds is Want for the flags that also take a bare number of
// seconds.
const WantSeconds = "want a duration such as 500ms, 2s or 5m, or a number of seconds"

// Parse reads a duration with a unit, such as 500ms, 2s, 1m30s, or 0.
func Parse(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, errors.New(Want)
	}
	return d, nil
}

// ParseSeconds is Parse that also takes a bare number as seconds: "2"
// and "0.5" are 2s and 500ms.
func ParseSeconds(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(t, 64); err == nil && !strings.ContainsAny(t, "eEnNiIxX") {
		if limit := float64(1<<63-1) / float64(time.Second); f > limit || f < -limit {
			return 0, errors.New(WantSeconds)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, errors.New(WantSeconds)
	}
	return d, nil
}

// Value is a flag.Value (and flag.Getter) holding a duration read by
// Parse, or by ParseSeconds when Seconds is set. String gives Go's form,
// which time.ParseDuration reads back.
type Value struct {
	D       *time.Duration
	Seconds bool
}

// Set reads s.
func (v Value) Set(s string) error {
	parse := Parse
	if v.Seconds {
		parse = ParseSeconds
	}
	d, err := parse(s)
	if err != nil {
		return err
	}
	*v.D = d
	return nil
}

func (v Value) String() string {
	if v.D == nil {
		return "0s"
	}
	return v.D.String()
}

// Get returns the duration, for flag.Getter.
func (v Value) Get() any {
	if v.D == nil {
		return time.Duration(0)
	}
	return *v.D
}

// Var defines a duration flag on fs, as fs.DurationVar does but read by
// Parse.
func Var(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(Value{D: p}, name, usage)
}

// Explain rewrites package flag's error for a value a flag could not
// read, `invalid value "5" for flag -timeout: REASON`, as snoopctl words
// it: `--timeout "5": REASON`. Other errors come back unchanged.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	rest, ok := strings.CutPrefix(err.Error(), "invalid value ")
	if !ok {
		return err
	}
	i := strings.LastIndex(rest, " for flag -")
	if i < 0 {
		return err
	}
	value := rest[:i]
	name, reason, ok := strings.Cut(rest[i+len(" for flag -"):], ": ")
	if !ok {
		return err
	}
	return fmt.Errorf("--%s %s: %s", name, value, reason)
}
