package distcache_test

import (
	"fmt"

	"github.com/snoopd/snoopd/distcache"
)

func ExampleParseAddr() {
	for _, s := range []string{
		"IP:127.0.0.1:9001",
		"IP:9001",
		"UNIX:/run/dc.sock",
		"[::1]:9001",
		"tcp://localhost:0",
	} {
		a, err := distcache.ParseAddr(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%-18s -> %-4s %-14q %-18s connect=%v\n", s, a.Network(), a.NetAddr(), a, a.CanConnect())
	}

	_, err := distcache.ParseAddr("IP:99999")
	fmt.Println(err)
	// Output:
	// IP:127.0.0.1:9001  -> tcp  "127.0.0.1:9001" IP:127.0.0.1:9001  connect=true
	// IP:9001            -> tcp  ":9001"        IP:9001            connect=false
	// UNIX:/run/dc.sock  -> unix "/run/dc.sock" UNIX:/run/dc.sock  connect=true
	// [::1]:9001         -> tcp  "[::1]:9001"   IP:[::1]:9001      connect=true
	// tcp://localhost:0  -> tcp  "localhost:0"  IP:localhost:0     connect=false
	// invalid address "IP:99999": port 99999 out of range 0-65535 (example: IP:127.0.0.1:9001)
}

func ExampleParseConnectAddr() {
	_, err := distcache.ParseConnectAddr("IP:9001")
	fmt.Println(err)
	// Output:
	// invalid address "IP:9001": IP:9001 can only be listened on; to connect give a host: IP:host:9001
}

// A listener opened on port 0 learns its real port only after listening;
// WithPort puts it into the configured address, keeping the host.
func ExampleAddr_WithPort() {
	a := distcache.MustParseAddr("IP:localhost:0")
	fmt.Println(a.CanConnect())
	a = a.WithPort(40123) // e.g. l.Addr().(*net.TCPAddr).Port
	fmt.Println(a, a.CanConnect())
	// Output:
	// false
	// IP:localhost:40123 true
}
