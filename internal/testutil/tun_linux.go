package testutil

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/snoopd/snoopd/internal/skip"
	"golang.org/x/sys/unix"
)

// tunSeq tells apart the tun interfaces of one process.
var tunSeq atomic.Int32

// Tun is a tun interface made for a test: IP packets with no link
// header. Packets written to it arrive on the interface as if received;
// it disappears when the test ends. Tests that capture on an interface
// without Ethernet use it; it needs root and /dev/net/tun, and skips the
// test, saying which, without them.
type Tun struct {
	Name string
	fd   int
}

// NewTun creates a tun interface and brings it up.
func NewTun(t testing.TB) *Tun {
	t.Helper()
	if os.Geteuid() != 0 {
		skip.Missing(t, "root, to create a tun interface")
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		skip.Missing(t, "/dev/net/tun: %v", err)
	}
	name := fmt.Sprintf("snp%d.%d", os.Getpid()%100000, tunSeq.Add(1))
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		skip.Missing(t, "a tun interface (TUNSETIFF): %v", err)
	}
	tun := &Tun{Name: name, fd: fd}
	t.Cleanup(func() { unix.Close(fd) })
	tun.SetUp(t, true)
	return tun
}

// SetUp brings the interface up or down.
func (tun *Tun) SetUp(t testing.TB, up bool) {
	t.Helper()
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	ifr, err := unix.NewIfreq(tun.Name)
	if err != nil {
		t.Fatal(err)
	}
	var flags uint16
	if up {
		flags = unix.IFF_UP
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("setting %s up=%v: %v", tun.Name, up, err)
	}
}

// Write hands p to the interface, as a packet received.
func (tun *Tun) Write(t testing.TB, p []byte) {
	t.Helper()
	if _, err := unix.Write(tun.fd, p); err != nil {
		t.Fatalf("writing to %s: %v", tun.Name, err)
	}
}
