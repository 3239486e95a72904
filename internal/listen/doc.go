// Package listen opens the listening sockets of every snoopd server: the
// proxies, the distcache cache server, the control API and the metrics
// endpoint. It is one careful policy for unix socket files, written once:
//
//   - A path that does not exist is bound.
//   - A socket file is probed with a connect. Refused (ECONNREFUSED) proves
//     that nobody accepts on it — its server died without removing it —
//     so it is removed and the path bound again. A connect that succeeds
//     is a live server (ErrAddrInUse); any other answer (a full backlog's
//     EAGAIN, a permission error) proves nothing, and the file is left
//     alone with an error that says so.
//   - Any other file (regular file, directory, symbolic link, pipe) is
//     never touched (ErrPathExists).
//   - The socket gets its mode with a chmod right after bind (see
//     Config.Mode for the window that leaves), and is removed when the
//     listener is closed.
//
// An abstract socket ("@name", Linux) has no file: nothing to probe,
// chmod or remove.
//
// TCP addresses are bound with the keep-alive the caller asks for, and a
// port in use is ErrAddrInUse too, so every caller tells "taken" from
// other failures the same way.
//
// Listeners are returned as the net package's own *net.TCPListener and
// *net.UnixListener, never wrapped: the proxy's epoll engine takes the
// descriptor out of them (File, SetUnlinkOnClose).
//
// The package is internal because it is this project's policy for its own
// sockets, spelled in distcache addresses, not an API promised to others.
package listen
