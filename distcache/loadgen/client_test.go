package loadgen

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

func dialT(t *testing.T, addr distcache.Addr, timeout time.Duration) *Client {
	t.Helper()
	c, err := Dial(context.Background(), addr, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientSync(t *testing.T) {
	for _, nw := range networks {
		t.Run(nw.Name, func(t *testing.T) {
			srv := startCache(t, nw.Addr(t))
			c := dialT(t, srv.Addr(), 5*time.Second)
			id := []byte("client-sync")
			// The largest session an ADD can carry with this id: multi-frame
			// in both directions.
			data := appendData(nil, dataSpec{state: 7, n: distcache.MaxMessageData - addOverhead - len(id)})

			if st, err := c.Add(id, data, time.Minute); err != nil || st != distcache.StatusOK {
				t.Fatalf("Add = %v, %v; want ok", st, err)
			}
			if st, err := c.Add(id, data[:10], time.Minute); err != nil || st != distcache.StatusAddExists {
				t.Fatalf("second Add = %v, %v; want exists", st, err)
			}
			got, hit, err := c.Get(id)
			if err != nil || !hit || !bytes.Equal(got, data) {
				t.Fatalf("Get = %d bytes, %v, %v; want the %d bytes added", len(got), hit, err, len(data))
			}
			if ok, err := c.Have(id); err != nil || !ok {
				t.Fatalf("Have = %v, %v; want true", ok, err)
			}
			if ok, err := c.Remove(id); err != nil || !ok {
				t.Fatalf("Remove = %v, %v; want true", ok, err)
			}
			if ok, err := c.Remove(id); err != nil || ok {
				t.Fatalf("second Remove = %v, %v; want false", ok, err)
			}
			if _, hit, err := c.Get(id); err != nil || hit {
				t.Fatalf("Get after Remove = hit %v, %v; want a miss", hit, err)
			}
			if ok, err := c.Have(id); err != nil || ok {
				t.Fatalf("Have after Remove = %v, %v; want false", ok, err)
			}
			// A status is an answer, not an error.
			if st, err := c.Add(id, data, 8*24*time.Hour); err != nil || st != distcache.StatusAddTimeoutRange {
				t.Fatalf("Add with 8 days = %v, %v; want timeout-range", st, err)
			}
		})
	}
}

func TestClientPipelined(t *testing.T) {
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	c := dialT(t, srv.Addr(), 5*time.Second)
	const n = 50
	var uids []uint32
	for i := range n {
		id := []byte{'p', byte('a' + i%26), byte('a' + i/26)}
		uid, err := c.Send(distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, id, []byte("data")))
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, uid)
		if _, err := c.Send(distcache.OpHave, id); err != nil {
			t.Fatal(err)
		}
	}
	if c.Pending() != 2*n {
		t.Fatalf("Pending = %d, want %d", c.Pending(), 2*n)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.Message.Op != distcache.OpAdd || r.Message.RequestUID != uids[i] || r.Latency <= 0 {
			t.Fatalf("reply %d: %s uid %d latency %v", i, r.Message.Op, r.Message.RequestUID, r.Latency)
		}
		if resp, err := distcache.ParseResponse(r.Message.Op, r.Message.Payload); err != nil || resp.Status != distcache.StatusOK {
			t.Fatalf("ADD %d: %+v, %v", i, resp, err)
		}
		r, err = c.Recv()
		if err != nil || r.Message.Op != distcache.OpHave || r.Message.Payload[0] != 0 {
			t.Fatalf("HAVE %d: %+v, %v", i, r.Message, err)
		}
	}
	if c.Pending() != 0 {
		t.Fatalf("Pending = %d after all replies", c.Pending())
	}
	if _, err := c.Recv(); err == nil {
		t.Fatal("Recv with nothing outstanding succeeded")
	}
	// Synchronous calls refuse to mix with outstanding pipelined requests.
	if _, err := c.Send(distcache.OpGet, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Get([]byte("y")); err == nil || !strings.Contains(err.Error(), "outstanding") {
		t.Fatalf("Get with a request outstanding: %v", err)
	}
	if _, err := c.Send(distcache.OpGet, make([]byte, distcache.MaxMessageData+1)); err == nil {
		t.Fatal("Send of an oversized payload succeeded")
	}
}

func TestClientRejectsOutOfStepResponse(t *testing.T) {
	tests := []struct {
		name string
		hook func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte)
		want string
	}{
		{"wrong uid", func(_ distcache.Message, _ int, uid uint32, resp []byte) (uint32, []byte) { return uid + 1, resp }, "uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{hook: tt.hook})
			c := dialT(t, srv.addr, 5*time.Second)
			_, err := c.Have([]byte("some-id"))
			if !errors.Is(err, ErrUnexpectedResponse) {
				t.Fatalf("Have = %v, want ErrUnexpectedResponse", err)
			}
			for _, s := range []string{"HAVE", `"some-id"`, srv.addr.String(), tt.want} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if _, err := c.Have([]byte("x")); !errors.Is(err, ErrClientBroken) {
				t.Fatalf("call after the error = %v, want ErrClientBroken", err)
			}
		})
	}
}

func TestClientMalformedAnswer(t *testing.T) {
	// A two-byte answer to HAVE is well framed but malformed: an error,
	// not a status.
	hook := func(req distcache.Message, _ int, uid uint32, resp []byte) (uint32, []byte) {
		return uid, []byte{0, 0}
	}
	srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{hook: hook})
	c := dialT(t, srv.addr, 5*time.Second)
	if _, err := c.Have([]byte("id")); !errors.Is(err, distcache.ErrMalformedPayload) {
		t.Fatalf("Have = %v, want ErrMalformedPayload", err)
	}
}

func TestClientTimeout(t *testing.T) {
	srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{silent: true})
	c := dialT(t, srv.addr, 100*time.Millisecond)
	start := time.Now()
	_, _, err := c.Get([]byte("id"))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Get from a silent server = %v, want a deadline error", err)
	}
	if el := time.Since(start); el < 90*time.Millisecond || el > 3*time.Second {
		t.Errorf("timed out after %v, want about 100ms", el)
	}
}

func TestClientSoftDeadlineResumes(t *testing.T) {
	// recv with a soft deadline that passes returns without error, and
	// the next call still gets the answer.
	hook := func(req distcache.Message, _ int, uid uint32, resp []byte) (uint32, []byte) {
		time.Sleep(100 * time.Millisecond)
		return uid, resp
	}
	srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{hook: hook})
	c := dialT(t, srv.addr, 5*time.Second)
	if _, err := c.Send(distcache.OpHave, []byte("id")); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.recv(time.Now().Add(10 * time.Millisecond)); ok || err != nil {
		t.Fatalf("recv before the answer = %v, %v; want not ok, no error", ok, err)
	}
	r, err := c.Recv()
	if err != nil || r.Latency < 90*time.Millisecond {
		t.Fatalf("Recv = latency %v, %v", r.Latency, err)
	}
}

func TestDialErrors(t *testing.T) {
	dead := deadAddr(t)
	_, err := Dial(context.Background(), dead, time.Second)
	var oe *OpError
	if !errors.As(err, &oe) || oe.Stage != "dial" || classify(err) != "refused" || !strings.Contains(err.Error(), dead.String()) {
		t.Errorf("Dial(%s) = %v; want a dial OpError naming the address, cause refused", dead, err)
	}
	missing := unixAddr(t)
	if _, err := Dial(context.Background(), missing, time.Second); classify(err) != "no-socket" {
		t.Errorf("Dial(%s) = %v (%s); want cause no-socket", missing, err, classify(err))
	}
}

func TestClientSteadyStateDoesNotAllocate(t *testing.T) {
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	c := dialT(t, srv.Addr(), 5*time.Second)
	id := []byte("alloc")
	if st, err := c.Add(id, make([]byte, 3000), time.Minute); err != nil || st != distcache.StatusOK {
		t.Fatal(st, err)
	}
	// The count below is process-wide, and the server allocates to store
	// a session, so the ADD below is one the server refuses as existing.
	// It and the GET hit travel as two frames.
	add := distcache.AppendAddRequest(nil, 60000, id, make([]byte, 3000))
	round := func() {
		for _, m := range []struct {
			op distcache.Op
			p  []byte
		}{{distcache.OpAdd, add}, {distcache.OpGet, id}, {distcache.OpHave, id}, {distcache.OpRemove, []byte("absent")}} {
			if _, err := c.Send(m.op, m.p); err != nil {
				t.Fatal(err)
			}
		}
		for range 4 {
			if _, err := c.Recv(); err != nil {
				t.Fatal(err)
			}
		}
	}
	round() // grow the buffers
	// The runtime may allocate now and then; allow a little.
	if a := testing.AllocsPerRun(200, round); a > 0.5 {
		t.Errorf("%.2f allocations per 4-request round trip, want none", a)
	}
}
