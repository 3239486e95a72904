// Package sdnotify tells a service manager about the daemon's state, as
// sd_notify(3) does, without libsystemd: a datagram with lines such as
// "READY=1" or "STOPPING=1" sent to the unix socket named by the
// NOTIFY_SOCKET environment variable, which systemd sets for a unit of
// Type=notify. A name starting with '@' is a socket in Linux's abstract
// namespace (Go's net package maps the '@' to the leading NUL byte).
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Env is the environment variable that names the socket.
const Env = "NOTIFY_SOCKET"

// Notify sends state to the socket named by $NOTIFY_SOCKET. It reports
// whether it sent anything: without the variable there is no service
// manager to tell, and it does nothing.
func Notify(state string) (sent bool, err error) {
	name := os.Getenv(Env)
	if name == "" {
		return false, nil
	}
	if name[0] != '/' && name[0] != '@' {
		return false, fmt.Errorf("%s=%q: want an absolute unix socket path or an abstract name starting with @", Env, name)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notify %s: %w", name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notify %s: %w", name, err)
	}
	return true, nil
}
