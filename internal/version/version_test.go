package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuild(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}
	tests := []struct {
		name     string
		override string
		bi       *debug.BuildInfo
		want     string
	}{
		{"override wins", "1.2.3", &debug.BuildInfo{Main: debug.Module{Version: "v0.1.0"}, Settings: rev}, "1.2.3"},
		{"module version", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.1.0"}, Settings: rev}, "v0.1.0"},
		{"revision, modified", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, "0.4.0-dev+0123456789ab.dirty"},
		{"revision", "", &debug.BuildInfo{Settings: rev[:1]}, "0.4.0-dev+0123456789ab"},
		{"pseudo-version", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261207061000-0123456789ab+dirty"}, Settings: rev[:1]}, "0.4.0-dev+0123456789ab"},
		{"nothing", "", nil, "0.4.0-dev"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fromBuild(tc.override, func() (*debug.BuildInfo, bool) { return tc.bi, tc.bi != nil })
			if got.Version != tc.want || got.Go == "" {
				t.Errorf("got %+v, want version %q", got, tc.want)
			}
		})
	}
}
