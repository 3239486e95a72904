package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// restoreAll brings back the saved proxies. A proxy whose chain comes
// back to a proxy it went through (a proxy loop: a state file written
// before loops were refused, or edited by hand) is kept failed and never
// started, so it does not dial; the others start, chains of proxies
// that end at a real server included.
//
// A proxy that breaks a rule new input must follow (validate: a relative
// unix path, saved by an older snoopd) is kept failed with the reason,
// too. A proxy declared on port 0 first tries the port it had (ports).
// It reports whether a saved fault with a duration had no end and was
// given one.
func (d *Daemon) restoreAll(specs []*snoopv1.ProxySpec, ports map[string]int) (newEnds bool) {
	type saved struct {
		spec *snoopv1.ProxySpec
		cfg  proxy.Config
	}
	var ok []saved
	var nodes []loopNode
	for _, spec := range specs {
		norm, cfg, err := normalize(spec)
		if err != nil {
			// The state file was validated on load; this is a bug.
			d.log.Error("saved proxy is invalid; skipped", "proxy", spec.GetName(), "err", err)
			continue
		}
		// Saved faults keep their ends, passed or not: a restart does not
		// start a fault's duration again.
		for _, f := range norm.GetFaults() {
			if f.GetDuration().AsDuration() > 0 && !f.GetEndsAt().IsValid() {
				newEnds = true
			}
		}
		fixEnds(norm, &cfg, norm, time.Now())
		ok = append(ok, saved{norm, cfg})
		nodes = append(nodes, nodeFor(cfg.Name, loopServer(norm, cfg), cfg.Listen))
	}
	set := newLoopSet(nodes, machineIPs())
	for i, s := range ok {
		var failErr error
		if l := set.findLoop(i); l != nil {
			failErr = errors.New(l.serverReason())
			d.log.Error("restored proxy forms a proxy loop; it stays failed, not started, until its server is changed", "proxy", s.cfg.Name, "err", failErr)
		} else if err := checkAbsolute(s.cfg); err != nil {
			failErr = err
			d.log.Error("restored proxy has a relative unix socket path; it stays failed, not started, until it is moved to an absolute one", "proxy", s.cfg.Name, "err", err)
		}
		d.restore(s.spec, s.cfg, failErr, ports[s.cfg.Name])
	}
	return newEnds
}

// restore brings back a saved proxy, normalised; with failErr it stays
// failed with that error and is not started. A proxy declared on TCP
// port 0 that was bound to savedPort before gets that port again if it is
// free; if not, it takes a new one, and says so in the log and in its
// Proxy.error.
func (d *Daemon) restore(norm *snoopv1.ProxySpec, cfg proxy.Config, failErr error, savedPort int) {
	again, trySaved := cfg, savedPort != 0 && cfg.Listen.Network() == distcache.NetworkTCP && cfg.Listen.Port() == 0
	if trySaved {
		again.Listen = cfg.Listen.WithPort(savedPort)
	}
	inst := newInstanceID()
	p, err := d.newRunner(norm, again, inst)
	if err != nil {
		d.log.Error("saved proxy is invalid; skipped", "proxy", cfg.Name, "err", err)
		return
	}
	e := &entry{spec: norm, p: p, created: time.Now(), instance: inst}
	if failErr != nil {
		e.bindErr = failErr
	} else if isTap(norm) {
		// A tap that cannot capture now (no CAP_NET_RAW since the
		// restart, its interface gone) stays, failed, as a proxy that
		// cannot listen does.
		if err := p.Start(); err != nil {
			e.bindErr = err
			d.log.Warn("restored tap cannot capture; it stays failed until enabled again", "proxy", cfg.Name, "err", err)
		} else {
			d.log.Info("restored tap", "proxy", cfg.Name, "interface", norm.GetTapInterface(), "server", norm.GetServer())
		}
	} else if err := p.Start(); err != nil && trySaved && errors.Is(err, proxy.ErrAddrInUse) {
		// The saved port is taken: a new one, rather than a failed proxy,
		// since port 0 asked for any port.
		p.Stop(context.Background())
		if p, err = d.newProxy(cfg, inst); err == nil {
			e.p = p
			err = p.Start()
		}
		if err != nil {
			e.bindErr = bindError("listen", err)
			d.log.Warn("restored proxy cannot listen; it stays failed until enabled again", "proxy", cfg.Name, "err", err)
		} else {
			e.note = fmt.Sprintf("port %d, which this proxy had before the restart, is taken; it listens on %s now", savedPort, p.Addr())
			d.log.Warn("restored proxy could not have its port back; it listens on a new one", "proxy", cfg.Name, "port", savedPort, "listen", p.Addr().String())
		}
	} else if err != nil {
		err = d.explainInUse(cfg.Name, cfg.Listen, err)
		e.bindErr = bindError("listen", err)
		d.log.Warn("restored proxy cannot listen; it stays failed until enabled again", "proxy", cfg.Name, "err", err)
	} else {
		d.log.Info("restored proxy", "proxy", cfg.Name, "listen", p.Addr().String(), "server", norm.GetServer())
	}
	// Restored at start, before anyone else can ask: a change of its
	// own, with nothing to save (the proxy comes from the state file).
	c := d.reg.begin()
	d.reg.locked(func(h held) error { c.install(h, cfg.Name, e); return nil })
	c.release()
}
