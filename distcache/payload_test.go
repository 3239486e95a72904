package distcache

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestAddRequestVector(t *testing.T) {
	// timeout 300000 ms (0x000493e0), id_len 2, id "hi", data "DATA".
	want := hexBytes(t, "00 04 93 e0  00 00 00 02  68 69  44 41 54 41")
	p := AppendAddRequest(nil, 300000, []byte("hi"), []byte("DATA"))
	if !bytes.Equal(p, want) {
		t.Fatalf("AppendAddRequest = % x, want % x", p, want)
	}
	req, err := ParseAddRequest(p)
	if err != nil || req.TimeoutMS != 300000 || string(req.SessionID) != "hi" || string(req.Data) != "DATA" {
		t.Fatalf("ParseAddRequest = %+v, %v", req, err)
	}
}

func TestCheckAdd(t *testing.T) {
	id := []byte("session")
	data := []byte("secret")
	for _, tc := range []struct {
		name    string
		payload []byte
		want    Status
	}{
		{"ok", AppendAddRequest(nil, 1000, id, data), StatusOK},
		{"7 days exactly", AppendAddRequest(nil, MaxAddTimeoutMS, id, data), StatusOK},
		{"id_len overruns", hexBytes(t, "00 00 00 01  00 00 00 09  61 62"), StatusAddCorrupt},
		{"no data: id_len uses up the rest", AppendAddRequest(nil, 1000, id, nil), StatusAddCorrupt},
		{"nothing after the header", AppendAddRequest(nil, 1000, nil, nil), StatusAddCorrupt},
		{"empty id", AppendAddRequest(nil, 1000, nil, data), StatusAddIDRange},
		{"65-byte id", AppendAddRequest(nil, 1000, make([]byte, 65), data), StatusAddIDRange},
		{"64-byte id", AppendAddRequest(nil, 1000, make([]byte, 64), data), StatusOK},
		{"timeout over 7 days", AppendAddRequest(nil, MaxAddTimeoutMS+1, id, data), StatusAddTimeoutRange},
		// The timeout is checked first, as the reference server does.
		{"timeout over 7 days and bad id_len", hexBytes(t, "ff ff ff ff  00 00 00 09  61 62"), StatusAddTimeoutRange},
		{"32768 bytes of data", AppendAddRequest(nil, 1000, id, make([]byte, 32768)), StatusOK},
		{"32769 bytes of data", AppendAddRequest(nil, 1000, id, make([]byte, 32769)), StatusAddDataRange},
	} {
		req, got, err := CheckAdd(tc.payload)
		if err != nil || got != tc.want {
			t.Errorf("%s: CheckAdd = %s, %v; want %s", tc.name, got, err, tc.want)
		}
		if got == StatusOK && (string(req.SessionID) != string(tc.payload[8:8+len(req.SessionID)]) || len(req.Data) == 0) {
			t.Errorf("%s: request %+v", tc.name, req)
		}
	}
	if _, _, err := CheckAdd([]byte{0, 0, 0, 1, 0, 0, 0}); !errors.Is(err, ErrMalformedPayload) {
		t.Errorf("7-byte ADD: %v, want a malformed-payload error (the server drops the connection)", err)
	}
}

func TestParseResponse(t *testing.T) {
	for _, tc := range []struct {
		op        Op
		payload   []byte
		status    Status
		hit       bool
		malformed bool
	}{
		{OpAdd, []byte{0}, StatusOK, false, false},
		{OpAdd, []byte{101}, StatusAddExists, false, false},
		{OpGet, []byte{1}, StatusNotOK, false, false},
		{OpGet, []byte{0}, StatusOK, false, false}, // one byte is always a status
		{OpGet, []byte("ab"), StatusOK, true, false},
		{OpRemove, []byte{1}, StatusNotOK, false, false},
		{OpHave, []byte{0}, StatusOK, false, false},
		{OpHave, []byte{0, 0}, 0, false, true},
		{OpGet, nil, 0, false, true},
	} {
		r, err := ParseResponse(tc.op, tc.payload)
		if tc.malformed {
			if !errors.Is(err, ErrMalformedPayload) {
				t.Errorf("%s % x: err %v, want malformed", tc.op, tc.payload, err)
			}
			continue
		}
		if err != nil || r.Status != tc.status || r.Hit != tc.hit {
			t.Errorf("%s % x: %+v, %v", tc.op, tc.payload, r, err)
		}
	}
}

// Statuses lists exactly the statuses Known accepts, and ParseStatus
// reads back each one's name and nothing else.
func TestStatusesParseBack(t *testing.T) {
	listed := map[Status]bool{}
	for _, s := range Statuses() {
		listed[s] = true
		if got, ok := ParseStatus(s.String()); !ok || got != s {
			t.Errorf("ParseStatus(%q) = %d, %v; want %d", s.String(), got, ok, s)
		}
	}
	for s := range 256 {
		if Status(s).Known() != listed[Status(s)] {
			t.Errorf("Status(%d): Known %v, listed %v", s, Status(s).Known(), listed[Status(s)])
		}
	}
	for _, name := range []string{"", "OK", "status(3)", "hit", "miss"} {
		if _, ok := ParseStatus(name); ok {
			t.Errorf("ParseStatus(%q) accepted a name the protocol does not define", name)
		}
	}
}

func TestStatusNames(t *testing.T) {
	want := map[Status]string{0: "ok", 1: "notok", 2: "disconnected", 100: "corrupt", 101: "exists",
		102: "timeout-range", 103: "id-range", 104: "data-range", 3: "status(3)"}
	for s, name := range want {
		if s.String() != name {
			t.Errorf("Status(%d) = %q, want %q", s, s.String(), name)
		}
		if s.Known() != (name != "status(3)") {
			t.Errorf("Status(%d).Known() = %v", s, s.Known())
		}
	}
}

// scanChunked feeds a payload to a scanner in pieces of size step.
func scanChunked(s *PayloadScanner, op Op, resp bool, p []byte, step int) PayloadSummary {
	s.Start(op, resp)
	for len(p) > 0 {
		n := min(step, len(p))
		s.Write(p[:n])
		p = p[n:]
	}
	return s.Summary()
}

func TestPayloadScannerAdd(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 500)
	p := AppendAddRequest(nil, 7000, []byte("the-id"), data)
	digest := sha256.Sum256(data)
	s := NewPayloadScanner(ScanOptions{Digest: true, CaptureLimit: 100})
	for _, step := range []int{1, 3, 7, 8, 9, 100, len(p)} {
		sum := scanChunked(s, OpAdd, false, p, step)
		if sum.Malformed || sum.TimeoutMS != 7000 || string(sum.SessionID) != "the-id" || sum.IDLen != 6 ||
			sum.DataLen != len(data) || sum.Size != len(p) {
			t.Fatalf("step %d: %+v", step, sum)
		}
		if !sum.HasDigest || !bytes.Equal(sum.Digest[:], digest[:DigestSize]) {
			t.Errorf("step %d: digest %x, want %x", step, sum.Digest, digest[:DigestSize])
		}
		if !bytes.Equal(sum.Data, data[:100]) || !sum.DataTruncated {
			t.Errorf("step %d: captured %d bytes, truncated=%v", step, len(sum.Data), sum.DataTruncated)
		}
	}
	// A long id is kept to 64 bytes, with its full length reported.
	long := bytes.Repeat([]byte("x"), 100)
	sum := scanChunked(s, OpAdd, false, AppendAddRequest(nil, 1, long, []byte("d")), 5)
	if len(sum.SessionID) != MaxSessionIDLen || sum.IDLen != 100 || sum.DataLen != 1 {
		t.Errorf("long id: kept %d of %d, data %d", len(sum.SessionID), sum.IDLen, sum.DataLen)
	}
	// An id_len that overruns the payload is malformed.
	sum = scanChunked(s, OpAdd, false, hexBytes(t, "00 00 00 01  00 00 00 09  61 62"), 1)
	if !sum.Malformed {
		t.Errorf("overrunning id_len not flagged: %+v", sum)
	}
}

func TestDescribe(t *testing.T) {
	data := []byte("session-data")
	add := Message{RequestUID: 1, Op: OpAdd, Frames: 1, Payload: AppendAddRequest(nil, 5, []byte("id1"), data)}
	tx := Describe(add, Message{IsResponse: true, RequestUID: 1, Op: OpAdd, Frames: 1, Payload: []byte{0}}, ScanOptions{})
	if tx.Status != StatusOK || tx.Hit || tx.ResponseMalformed || tx.DataLen != len(data) || string(tx.SessionID) != "id1" || tx.HasDigest || tx.Data != nil {
		t.Errorf("ADD: %+v", tx)
	}
	get := Message{RequestUID: 2, Op: OpGet, Frames: 1, Payload: []byte("id1")}
	tx = Describe(get, Message{IsResponse: true, Op: OpGet, Frames: 1, Payload: data}, ScanOptions{Digest: true, CaptureLimit: 4})
	if !tx.Hit || tx.Status != StatusOK || tx.DataLen != len(data) || !tx.HasDigest || string(tx.Data) != "sess" || !tx.DataTruncated {
		t.Errorf("GET hit: %+v", tx)
	}
	tx = Describe(get, Message{IsResponse: true, Op: OpGet, Frames: 1, Payload: []byte{1}}, ScanOptions{Digest: true})
	if tx.Hit || tx.Status != StatusNotOK || tx.DataLen != 0 || tx.HasDigest {
		t.Errorf("GET miss: %+v", tx)
	}
	tx = Describe(Message{Op: OpHave, Payload: []byte("id1")}, Message{Op: OpHave, Payload: []byte{0, 0}}, ScanOptions{})
	if !tx.ResponseMalformed {
		t.Errorf("malformed HAVE response: %+v", tx)
	}
	tx = Describe(add, Message{Op: OpAdd, Payload: []byte{101}}, ScanOptions{})
	if tx.Status != StatusAddExists || tx.ResponseMalformed {
		t.Errorf("ADD exists: %+v", tx)
	}
}
