// Package version is the one version string of snoopd and snoopctl: the
// tagged module version the Go toolchain recorded in the binary, or the
// release under way with its VCS revision (".dirty" when the tree was
// modified), unless the build sets it:
//
//	go build -ldflags "-X github.com/snoopd/snoopd/internal/version.Override=1.2.3" ./...
package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Override, set at link time, replaces the version read from build info.
var Override string

// Release is the version this tree is becoming, as CHANGELOG.md names it:
// a build that is not a tagged release reports it as "Release-dev", with
// the revision it was built from ("0.4.0-dev+0123456789ab").
const Release = "0.4.0"

// Info is what a binary knows about its own build.
type Info struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
}

var (
	once sync.Once
	info Info
)

// Get returns the build's version information; it is read once.
func Get() Info {
	once.Do(func() { info = fromBuild(Override, debug.ReadBuildInfo) })
	return info
}

// String is the version alone: "1.2.3", "v0.3.1", "3f2a9c1d0b7e-dirty".
func String() string { return Get().Version }

// fromBuild works out the version from an override and the build info.
func fromBuild(override string, read func() (*debug.BuildInfo, bool)) Info {
	v := Info{Go: runtime.Version()}
	bi, ok := read()
	if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	switch {
	case override != "":
		v.Version = override
	case ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" && !strings.HasPrefix(bi.Main.Version, "v0.0.0-"):
		v.Version = bi.Main.Version // a tagged release
	case v.Revision != "":
		v.Version = Release + "-dev+" + shortRev(v.Revision)
		if v.Modified {
			v.Version += ".dirty"
		}
	default:
		v.Version = Release + "-dev"
	}
	return v
}

// shortRev keeps the first 12 digits of a revision, as git does in
// version strings.
func shortRev(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}
