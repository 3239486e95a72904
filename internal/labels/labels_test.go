package labels

import (
	"strings"
	"testing"
)

func TestKeysAndValuesFollowKubernetesRules(t *testing.T) {
	good := []string{"owner", "app.kubernetes.io/name", "a", "A-b_c.d", "example.com/x", strings.Repeat("k", 63)}
	for _, k := range good {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", k, err)
		}
	}
	bad := []string{"", "-a", "a-", "/a", "a/", "Example.com/a", "a b", "a=b", strings.Repeat("k", 64), strings.Repeat("p", 254) + "/a", "a/b/c"}
	for _, k := range bad {
		if err := ValidateKey(k); err == nil {
			t.Errorf("ValidateKey(%q) = nil, want an error", k)
		}
	}
	for _, v := range []string{"", "ci", "v1.2-3_x"} {
		if err := ValidateValue(v); err != nil {
			t.Errorf("ValidateValue(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"-x", "a/b", "a b", strings.Repeat("v", 64)} {
		if err := ValidateValue(v); err == nil {
			t.Errorf("ValidateValue(%q) = nil, want an error", v)
		}
	}
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many["k"+strings.Repeat("x", i)] = ""
	}
	if err := Validate(many); err == nil {
		t.Errorf("Validate(%d labels) = nil, want an error", len(many))
	}
}

func TestSelectorSelectsByEqualityAndPresence(t *testing.T) {
	ci := map[string]string{"owner": "ci", "tier": "test"}
	dev := map[string]string{"owner": "dev"}
	none := map[string]string{}
	cases := []struct {
		sel           string
		ci, dev, none bool
	}{
		{"", true, true, true},
		{"owner=ci", true, false, false},
		{"owner==ci", true, false, false},
		{" owner = ci , tier=test ", true, false, false},
		{"owner!=ci", false, true, true},
		{"tier", true, false, false},
		{"!tier", false, true, true},
		{"owner,!tier", false, true, false},
	}
	for _, c := range cases {
		s, err := ParseSelector(c.sel)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", c.sel, err)
		}
		if got := [3]bool{s.Matches(ci), s.Matches(dev), s.Matches(none)}; got != [3]bool{c.ci, c.dev, c.none} {
			t.Errorf("%q selects ci, dev, none = %v, want %v", c.sel, got, [3]bool{c.ci, c.dev, c.none})
		}
	}
	for _, bad := range []string{"owner=ci,", "owner in (ci)", "=ci", "owner=c i", "!"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("ParseSelector(%q) = nil error, want one", bad)
		}
	}
}

func TestParseLabelWantsKeyEqualsValue(t *testing.T) {
	if k, v, err := ParseLabel("owner=ci"); err != nil || k != "owner" || v != "ci" {
		t.Errorf("ParseLabel(owner=ci) = %q, %q, %v", k, v, err)
	}
	if k, v, err := ParseLabel("canary="); err != nil || k != "canary" || v != "" {
		t.Errorf("ParseLabel(canary=) = %q, %q, %v", k, v, err)
	}
	if _, _, err := ParseLabel("owner"); err == nil || !strings.Contains(err.Error(), "key=value") {
		t.Errorf("ParseLabel(owner) = %v, want a key=value hint", err)
	}
	if got := String(map[string]string{"b": "2", "a": "1"}); got != "a=1,b=2" {
		t.Errorf("String = %q", got)
	}
}
