//go:build !linux

package proxy

import "fmt"

// DefaultEngine is the engine NewEngine("") returns: the goroutine engine
// where epoll does not exist.
const DefaultEngine = EngineGoroutines

func newEpollEngine(loops int) (Engine, error) {
	return nil, fmt.Errorf("%w: the epoll engine needs Linux; use %s", ErrInvalidConfig, EngineGoroutines)
}
