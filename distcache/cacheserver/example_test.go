package cacheserver_test

import (
	"fmt"
	"net"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
)

// A server on a free loopback port, and one ADD and one GET sent to it
// with the protocol package.
func ExampleStart() {
	srv, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	a := srv.Addr() // the real port, not 0
	conn, err := net.Dial(a.Network().String(), a.NetAddr())
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	// Both requests go out in one write; the answers come back in order.
	var req []byte
	req = distcache.AppendMessage(req, false, 1, distcache.OpAdd,
		distcache.AppendAddRequest(nil, 60000, []byte("session-id"), []byte("session data")))
	req = distcache.AppendMessage(req, false, 2, distcache.OpGet, []byte("session-id"))
	if _, err := conn.Write(req); err != nil {
		panic(err)
	}
	r := distcache.NewReader(conn, distcache.ServerToClient)
	for range 2 {
		m, err := r.ReadMessage()
		if err != nil {
			panic(err)
		}
		resp, _ := distcache.ParseResponse(m.Op, m.Payload)
		fmt.Printf("%s uid %d: status %s, data %q\n", m.Op, m.RequestUID, resp.Status, resp.Data)
	}
	// Output:
	// ADD uid 1: status ok, data ""
	// GET uid 2: status ok, data "session data"
}
