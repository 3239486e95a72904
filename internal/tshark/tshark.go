package tshark

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Available reports whether tshark can be run, naming what is missing.
func Available() error {
	if _, err := exec.LookPath("tshark"); err != nil {
		return errors.New("tshark is not installed (apt-get install tshark)")
	}
	return nil
}

// Script is the dissector's path in this source tree.
func Script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "contrib", "wireshark", "distcache.lua")
}

// PDU is one distcache PDU as the dissector showed it: a whole message,
// or the frames of one up to a broken rule.
type PDU struct {
	Frame      int       // the packet it was shown in
	Time       time.Time // that packet's time
	Stream     int       // tcp.stream
	Src, Dst   string    // the packet's addresses, host:port
	IsResponse bool
	UID        uint32
	Op         int // the first frame's operation
	Frames     int // distcache.message.frames
	Length     int // distcache.message.length
	SessionID  []byte
	Status     int // -1 when none is shown
	Result     string
	ResponseIn int // frame numbers; 0 when none is shown
	ResponseTo int
	Latency    time.Duration // distcache.time
	Rule       string        // distcache.rule: the rule the PDU broke
	Expert     []string      // expert info messages under the PDU
}

// Run runs tshark over the capture at path with the dissector, in two
// passes (so requests show their responses), and returns the distcache
// PDUs in packet order. args go to tshark before the file (-o
// distcache.port:N, say).
func Run(ctx context.Context, path string, args ...string) ([]PDU, error) {
	argv := append([]string{"-n", "-2", "-X", "lua_script:" + Script()}, args...)
	argv = append(argv, "-r", path, "-T", "pdml")
	cmd := exec.CommandContext(ctx, "tshark", argv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("tshark %s: %w: %s", strings.Join(argv, " "), err, errb.String())
	}
	if s := errb.String(); strings.Contains(s, "Lua") || strings.Contains(s, "lua") {
		return nil, fmt.Errorf("tshark reported a Lua error: %s", s)
	}
	return ReadPDML(&out)
}

type pdmlField struct {
	Name   string      `xml:"name,attr"`
	Show   string      `xml:"show,attr"`
	Value  string      `xml:"value,attr"`
	Fields []pdmlField `xml:"field"`
	Protos []pdmlProto `xml:"proto"`
}

type pdmlProto struct {
	Name   string      `xml:"name,attr"`
	Fields []pdmlField `xml:"field"`
	Protos []pdmlProto `xml:"proto"`
}

// ReadPDML reads tshark's PDML and returns its distcache PDUs.
func ReadPDML(r io.Reader) ([]PDU, error) {
	dec := xml.NewDecoder(r)
	var out []PDU
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("pdml: %w", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "packet" {
			continue
		}
		var pkt struct {
			Protos []pdmlProto `xml:"proto"`
		}
		if err := dec.DecodeElement(&pkt, &se); err != nil {
			return out, fmt.Errorf("pdml packet: %w", err)
		}
		pdus, err := packetPDUs(pkt.Protos)
		if err != nil {
			return out, err
		}
		out = append(out, pdus...)
	}
}

// packetPDUs returns the distcache PDUs of one packet, each with the
// packet's frame, time, stream and addresses.
func packetPDUs(protos []pdmlProto) ([]PDU, error) {
	var base PDU
	var dc []pdmlProto
	var ip, port [2]string
	var walk func([]pdmlProto)
	walk = func(ps []pdmlProto) {
		for _, p := range ps {
			if p.Name == "distcache" {
				dc = append(dc, p)
				continue
			}
			eachField(p.Fields, func(f pdmlField) {
				switch f.Name {
				case "frame.number":
					base.Frame, _ = strconv.Atoi(f.Show)
				case "frame.time_epoch":
					base.Time = epoch(f.Show)
				case "tcp.stream":
					base.Stream, _ = strconv.Atoi(f.Show)
				case "ip.src", "ipv6.src":
					ip[0] = f.Show
				case "ip.dst", "ipv6.dst":
					ip[1] = f.Show
				case "tcp.srcport":
					port[0] = f.Show
				case "tcp.dstport":
					port[1] = f.Show
				}
			})
			walk(p.Protos)
		}
	}
	walk(protos)
	if ip[0] != "" {
		base.Src, base.Dst = hostPort(ip[0], port[0]), hostPort(ip[1], port[1])
	}
	out := make([]PDU, 0, len(dc))
	for _, p := range dc {
		u := base
		u.Status = -1
		first := map[string]bool{}
		var err error
		eachField(p.Fields, func(f pdmlField) {
			// Header fields repeat per frame: the message's are its
			// first frame's.
			if first[f.Name] && strings.HasPrefix(f.Name, "distcache.") {
				return
			}
			first[f.Name] = true
			switch f.Name {
			case "distcache.is_response":
				u.IsResponse = f.Show == "1"
			case "distcache.request_uid":
				var v uint64
				v, err = strconv.ParseUint(f.Show, 10, 32)
				u.UID = uint32(v)
			case "distcache.operation":
				u.Op, _ = strconv.Atoi(f.Show)
			case "distcache.message.frames":
				u.Frames, _ = strconv.Atoi(f.Show)
			case "distcache.message.length":
				u.Length, _ = strconv.Atoi(f.Show)
			case "distcache.session_id":
				u.SessionID, _ = hex.DecodeString(f.Value)
			case "distcache.status":
				u.Status, _ = strconv.Atoi(f.Show)
			case "distcache.result":
				u.Result = f.Show
			case "distcache.response_in":
				u.ResponseIn, _ = strconv.Atoi(f.Show)
			case "distcache.response_to":
				u.ResponseTo, _ = strconv.Atoi(f.Show)
			case "distcache.time":
				u.Latency = seconds(f.Show)
			case "distcache.rule":
				u.Rule = f.Show
			case "_ws.expert.message":
				u.Expert = append(u.Expert, f.Show)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("pdml frame %d: request_uid: %w", u.Frame, err)
		}
		out = append(out, u)
	}
	return out, nil
}

// eachField calls fn for every field under fs, depth first.
func eachField(fs []pdmlField, fn func(pdmlField)) {
	for _, f := range fs {
		fn(f)
		eachField(f.Fields, fn)
		for _, p := range f.Protos {
			eachField(p.Fields, fn)
		}
	}
}

func hostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// epoch parses tshark's seconds.nanoseconds.
func epoch(s string) time.Time {
	sec, frac, _ := strings.Cut(s, ".")
	secs, _ := strconv.ParseInt(sec, 10, 64)
	frac = (frac + "000000000")[:9]
	ns, _ := strconv.ParseInt(frac, 10, 64)
	return time.Unix(secs, ns).UTC()
}

// seconds parses a relative time as tshark shows it ("0.000806375").
func seconds(s string) time.Duration {
	s = strings.TrimSuffix(strings.TrimSpace(s), " seconds")
	t := epoch(s)
	return time.Duration(t.UnixNano())
}
