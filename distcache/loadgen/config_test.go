package loadgen

import (
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

func TestParseMix(t *testing.T) {
	tests := []struct {
		in      string
		want    Mix
		wantErr string
	}{
		{in: "add=1,get=3,remove=1,have=1", want: Mix{1, 3, 1, 1}},
		{in: "GET=5", want: Mix{0, 5, 0, 0}},
		{in: " add = 2 , Have=7 ", want: Mix{2, 0, 0, 7}},
		{in: "add=0,get=1", want: Mix{0, 1, 0, 0}},
		{in: "", wantErr: "empty mix"},
		{in: "get", wantErr: "want op=weight"},
		{in: "put=1", wantErr: "unknown operation"},
		{in: "get=1,get=2", wantErr: "twice"},
		{in: "get=-1", wantErr: "whole number"},
		{in: "get=x", wantErr: "whole number"},
		{in: "get=0,add=0", wantErr: "every weight is 0"},
	}
	for _, tt := range tests {
		got, err := ParseMix(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseMix(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseMix(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		// String writes what ParseMix reads.
		if back, err := ParseMix(got.String()); err != nil || back != got {
			t.Errorf("ParseMix(%q.String() = %q) = %v, %v", tt.in, got.String(), back, err)
		}
	}
	if s := DefaultMix.String(); s != "add=1,get=3,remove=1,have=1" {
		t.Errorf("DefaultMix.String() = %q", s)
	}
}

func TestParseSizeRange(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi int
		ok     bool
	}{
		{"50-4096", 50, 4096, true},
		{"100", 100, 100, true},
		{" 2 - 3 ", 2, 3, true},
		{"10-5", 0, 0, false},
		{"a-5", 0, 0, false},
		{"5-", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		lo, hi, err := ParseSizeRange(tt.in)
		if (err == nil) != tt.ok || lo != tt.lo || hi != tt.hi {
			t.Errorf("ParseSizeRange(%q) = %d, %d, %v", tt.in, lo, hi, err)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	addr := distcache.MustParseAddr("IP:127.0.0.1:9")
	ok := Config{Addr: addr, Ops: 1}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"no address", func(c *Config) { c.Addr = distcache.Addr{} }, "no server address"},
		{"listen-only address", func(c *Config) { c.Addr = distcache.MustParseAddr("IP:9") }, "cannot connect"},
		{"no bound", func(c *Config) { c.Ops = 0 }, "neither an operation count nor a duration"},
		{"pipeline per-op", func(c *Config) { c.Pipeline = 4 }, "needs persistent"},
		{"too few sessions", func(c *Config) { c.Conns, c.Sessions = 8, 4 }, "cannot be split"},
		{"one-byte data", func(c *Config) { c.MinData, c.MaxData = 1, 10 }, "below 2"},
		{"empty range", func(c *Config) { c.MinData, c.MaxData = 10, 5 }, "is empty"},
		{"data too large", func(c *Config) { c.MaxData = distcache.MaxSessionDataLen }, "does not fit an ADD message"},
		{"id too long", func(c *Config) { c.IDPrefix = strings.Repeat("x", 64) }, "exceed 64"},
		{"session timeout", func(c *Config) { c.SessionTimeout = 8 * 24 * time.Hour }, "session timeout"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "rate"},
		{"negative weight", func(c *Config) { c.Mix = Mix{1, -1, 0, 0} }, "negative weight"},
	}
	for _, tt := range tests {
		c := ok
		tt.mod(&c)
		if _, err := c.withDefaults(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error = %v, want one containing %q", tt.name, err, tt.wantErr)
		}
	}

	c, err := ok.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Conns != 1 || c.Pipeline != 1 || c.Sessions != DefaultSessions || c.MinData != DefaultMinData ||
		c.MaxData != DefaultMaxData || c.Mix != DefaultMix || c.Timeout != DefaultTimeout ||
		c.SessionTimeout != DefaultSessionTimeout || !strings.HasPrefix(c.IDPrefix, "dcload-") {
		t.Errorf("defaults not applied: %+v", c)
	}
	// The largest data that fits: 32768 minus the ADD header and the id.
	c = ok
	c.IDPrefix, c.Sessions = "p", 10 // ids "p0".."p9": 2 bytes
	c.MinData, c.MaxData = 2, distcache.MaxMessageData-8-2
	if _, err := c.withDefaults(); err != nil {
		t.Errorf("largest data: %v", err)
	}
}

func TestSessionID(t *testing.T) {
	if got := string(sessionID(nil, "x-", 7, 500)); got != "x-007" {
		t.Errorf("sessionID = %q, want x-007", got)
	}
	if got := string(sessionID(nil, "x-", 0, 1)); got != "x-0" {
		t.Errorf("sessionID = %q, want x-0", got)
	}
}
