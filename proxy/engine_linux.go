package proxy

import "fmt"

// DefaultEngine is the engine NewEngine("") returns.
const DefaultEngine = EngineEpoll

func newEpollEngine(loops int) (Engine, error) {
	return nil, fmt.Errorf("epoll engine: not built yet")
}
