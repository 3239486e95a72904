package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/export"
	"github.com/snoopd/snoopd/internal/duration"
	"github.com/snoopd/snoopd/internal/size"
	"github.com/snoopd/snoopd/match"
)

// exportCloseTimeout bounds, at shutdown, publishing what is still queued
// and waiting for JetStream's acknowledgements.
const exportCloseTimeout = 5 * time.Second

// exportOptions are the --export flags and the daemon's name.
type exportOptions struct {
	servers   []string
	subject   string
	name      string
	filter    string
	tlsCA     string
	tlsCert   string
	tlsKey    string
	creds     string
	tokenFile string
	format    string
	data      bool
	stream    string
	maxAge    time.Duration
	maxBytes  string
	queue     int
	batch     int
	interval  time.Duration

	maxBytesN int64 // derived by check
}

func addExportFlags(fs *flag.FlagSet, o *exportOptions) {
	fs.Func("export", "publish events to NATS at `URLS` (nats://host:port, comma-separated or repeated; tls:// for TLS)", func(s string) error {
		for _, u := range strings.Split(s, ",") {
			if u = strings.TrimSpace(u); u != "" {
				o.servers = append(o.servers, u)
			}
		}
		return nil
	})
	fs.StringVar(&o.subject, "export-subject", export.DefaultSubject, "with --export, the subject `PREFIX`: events go to PREFIX.DAEMON.PROXY.KIND[.OP]")
	fs.StringVar(&o.name, "daemon-name", "", "this daemon's `NAME` in a fleet: in subjects, exported events and snoopctl version (default the host name)")
	fs.StringVar(&o.filter, "export-filter", "", "with --export, export only events for which the CEL `EXPR` is true (the language of snoopctl tail --filter)")
	fs.StringVar(&o.tlsCA, "export-tls-ca", "", "with --export, trust the NATS servers' certificates signed by a CA in PEM `FILE`")
	fs.StringVar(&o.tlsCert, "export-tls-cert", "", "with --export, present the client certificate in PEM `FILE` to NATS")
	fs.StringVar(&o.tlsKey, "export-tls-key", "", "the private key of --export-tls-cert, in PEM `FILE`")
	fs.StringVar(&o.creds, "export-creds", "", "with --export, authenticate to NATS with the credentials `FILE` (JWT and NKey seed)")
	fs.StringVar(&o.tokenFile, "export-token-file", "", "with --export, authenticate to NATS with the token in `FILE` (mode 0600 or stricter)")
	fs.StringVar(&o.format, "export-format", export.FormatProtobuf, "with --export, the payload `FORMAT`: protobuf (snoop.v1.Event) or json")
	fs.BoolVar(&o.data, "export-data", false, "with --export, include captured session data (proxies with --capture-data); it may hold TLS master secrets")
	fs.StringVar(&o.stream, "export-stream", export.DefaultStream, "with --export, the JetStream stream `NAME` to create or reuse over PREFIX.>; empty for core NATS only")
	duration.Var(fs, &o.maxAge, "export-max-age", 0, "with --export, a stream snoopd creates keeps events for `DURATION` (0: no limit)")
	fs.StringVar(&o.maxBytes, "export-max-bytes", "", "with --export, a stream snoopd creates keeps up to `SIZE` bytes (1073741824, 512M, 10G: powers of 1024; empty: no limit)")
	fs.IntVar(&o.batch, "export-batch", export.DefaultBatch, "with --export, put up to `N` events of one subject in a message (a snoop.v1.WatchEventsResponse); 1: each event a snoop.v1.Event of its own, sent at once. Batching is what keeps the export's cost low (docs/fleet.md)")
	duration.Var(fs, &o.interval, "export-interval", export.DefaultFlushInterval, "with --export and batching, send a subject's batch at the latest `DURATION` after the export got its first event (it goes sooner when full; the export gets each event up to --watch-interval after it happens)")
	fs.IntVar(&o.queue, "export-queue", 0, "no effect since 0.4.0, kept so that old command lines still start: the export reads the log every event stream reads (--watch-queue, --watch-buffer)")
}

// check validates the export flags; it reads no file.
func (o *exportOptions) check() error {
	if o.name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "snoopd"
		}
		o.name = h
	}
	if !utf8.ValidString(o.name) {
		return fmt.Errorf("--daemon-name %q: not valid UTF-8", o.name)
	}
	if len(o.servers) == 0 {
		for flag, set := range map[string]bool{
			"--export-filter": o.filter != "", "--export-tls-ca": o.tlsCA != "", "--export-tls-cert": o.tlsCert != "",
			"--export-creds": o.creds != "", "--export-token-file": o.tokenFile != "", "--export-data": o.data,
			"--export-max-age": o.maxAge != 0, "--export-max-bytes": o.maxBytes != "", "--export-queue": o.queue != 0,
			"--export-batch": o.batch != export.DefaultBatch, "--export-interval": o.interval != export.DefaultFlushInterval,
		} {
			if set {
				return fmt.Errorf("%s needs --export nats://HOST:PORT", flag)
			}
		}
		return nil
	}
	for _, s := range o.servers {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return fmt.Errorf("--export %s: want a NATS URL such as nats://127.0.0.1:4222", s)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("--export %s: scheme %q: want nats://, tls://, ws:// or wss://", s, u.Scheme)
		}
	}
	if !export.ValidPrefix(o.subject) {
		return fmt.Errorf("--export-subject %q: want dot-separated tokens without spaces, '*' or '>' (snoop, or acme.snoop)", o.subject)
	}
	if o.format != export.FormatProtobuf && o.format != export.FormatJSON {
		return fmt.Errorf("--export-format %q: want %s or %s", o.format, export.FormatProtobuf, export.FormatJSON)
	}
	switch {
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return errors.New("--export-tls-cert and --export-tls-key go together: give both or neither")
	case o.creds != "" && o.tokenFile != "":
		return errors.New("--export-creds and --export-token-file: give one way to authenticate to NATS")
	case o.maxAge < 0:
		return fmt.Errorf("--export-max-age %v: must not be negative", o.maxAge)
	case o.queue < 0:
		return fmt.Errorf("--export-queue %d: must not be negative", o.queue)
	case o.batch < 1 || o.batch > maxExportBatch:
		return fmt.Errorf("--export-batch %d: want 1 to %d events per message", o.batch, maxExportBatch)
	case o.interval < time.Millisecond || o.interval > maxExportInterval:
		return fmt.Errorf("--export-interval %v: want 1ms to %v", o.interval, maxExportInterval)
	case o.stream == "" && (o.maxAge != 0 || o.maxBytes != ""):
		return errors.New("--export-max-age and --export-max-bytes size a JetStream stream; they need --export-stream")
	case o.stream != "" && !validStreamName(o.stream):
		return fmt.Errorf("--export-stream %q: a stream name has no spaces, '.', '*', '>', '/' or '\\'", o.stream)
	}
	if o.maxBytes != "" {
		n, err := size.Parse(o.maxBytes)
		if err != nil {
			return fmt.Errorf("--export-max-bytes %q: %w", o.maxBytes, err)
		}
		o.maxBytesN = n
	}
	if o.filter != "" {
		if _, err := match.Compile(match.Spec{Expr: o.filter}); err != nil {
			var fe *match.FieldError
			if errors.As(err, &fe) {
				return fmt.Errorf("--export-filter: %s", fe.Reason)
			}
			return fmt.Errorf("--export-filter: %w", err)
		}
	}
	return nil
}

func validStreamName(s string) bool {
	return !strings.ContainsAny(s, " \t\r\n.*>/\\")
}

// startExport starts exporting d's events, if --export asks for it.
func startExport(d *daemon.Daemon, o *exportOptions, log *slog.Logger) (*export.Exporter, error) {
	if len(o.servers) == 0 {
		return nil, nil
	}
	var nopts []nats.Option
	if o.tlsCA != "" {
		nopts = append(nopts, nats.RootCAs(o.tlsCA))
	}
	if o.tlsCert != "" {
		nopts = append(nopts, nats.ClientCert(o.tlsCert, o.tlsKey))
	}
	if o.creds != "" {
		if _, err := os.Stat(o.creds); err != nil {
			return nil, fmt.Errorf("--export-creds: %w", err)
		}
		nopts = append(nopts, nats.UserCredentials(o.creds))
	}
	if o.tokenFile != "" {
		tok, err := readSecret("--export-token-file", o.tokenFile)
		if err != nil {
			return nil, err
		}
		nopts = append(nopts, nats.Token(tok))
	}
	x, err := export.Start(d.Hub(), export.Config{
		Servers:       o.servers,
		Subject:       o.subject,
		Daemon:        o.name,
		Stream:        o.stream,
		MaxAge:        o.maxAge,
		MaxBytes:      o.maxBytesN,
		Format:        o.format,
		Data:          o.data,
		Filter:        match.Spec{Expr: o.filter},
		Options:       nopts,
		Batch:         o.batch,
		FlushInterval: o.interval,
		Logger:        log.With("component", "export"),
	})
	if err != nil {
		return nil, fmt.Errorf("--export: %w", err)
	}
	d.SetExport(x)
	if o.queue != 0 {
		log.Warn("--export-queue has no effect since 0.4.0: the export reads the log every event stream reads; size it with --watch-queue and --watch-buffer")
	}
	log.Info("exporting events to NATS", "servers", strings.Join(o.servers, ","), "subject", o.subject+"."+export.Token(o.name)+".>",
		"stream", o.stream, "format", o.format, "filter", o.filter, "data", o.data, "batch", o.batch, "interval", o.interval)
	return x, nil
}

// readSecret reads a secret from a file that only its owner may read.
func readSecret(flagName, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s: not a regular file", flagName, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s %s: mode %#o lets other users read the token; chmod 600 %s", flagName, path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenLen+1))
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flagName, path, err)
	}
	if len(b) > maxTokenLen {
		return "", fmt.Errorf("%s %s: longer than %d bytes; is it the right file?", flagName, path, maxTokenLen)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s %s: empty; put the token in it", flagName, path)
	}
	return tok, nil
}

// maxExportBatch bounds --export-batch. A batch is sent before it is
// full once its payload reaches 256 KiB (or the server's max_payload), so
// this only bounds how many events wait in it.
const maxExportBatch = 8192

// maxExportInterval bounds --export-interval: events held longer than
// this are no use to a live view, and would sit in memory.
const maxExportInterval = time.Minute
