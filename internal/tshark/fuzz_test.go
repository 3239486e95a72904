package tshark

import (
	"bytes"
	"testing"
)

const samplePDML = `<?xml version="1.0" encoding="utf-8"?>
<pdml version="0" creator="wireshark/4.0.17">
<packet>
  <proto name="frame"><field name="frame.number" show="4"/><field name="frame.time_epoch" show="1796652455.065584684"/></proto>
  <proto name="ip"><field name="ip.src" show="10.0.0.1"/><field name="ip.dst" show="10.0.0.2"/></proto>
  <proto name="tcp"><field name="tcp.srcport" show="40001"/><field name="tcp.dstport" show="9001"/><field name="tcp.stream" show="0"/></proto>
  <proto name="distcache">
    <field name="" show="Frame 1: request, 4 bytes, complete">
      <field name="distcache.is_response" show="0" value="00"/>
      <field name="distcache.request_uid" show="7" value="00000007"/>
      <field name="distcache.operation" show="1" value="01"/>
    </field>
    <field name="distcache.message.frames" show="1"/>
    <field name="distcache.session_id" show="67:6f:6f:64" value="676f6f64"/>
    <field name="distcache.result" show="miss"/>
    <field name="distcache.response_in" show="5"/>
  </proto>
</packet>
</pdml>
`

func TestReadPDMLTakesEachPDUWithItsPacket(t *testing.T) {
	pdus, err := ReadPDML(bytes.NewReader([]byte(samplePDML)))
	if err != nil {
		t.Fatal(err)
	}
	if len(pdus) != 1 {
		t.Fatalf("%d PDUs, want 1", len(pdus))
	}
	p := pdus[0]
	if p.Frame != 4 || p.Src != "10.0.0.1:40001" || p.UID != 7 || p.Op != 1 || string(p.SessionID) != "good" || p.ResponseIn != 5 || p.Result != "miss" {
		t.Errorf("PDU %+v", p)
	}
	if p.Time.UnixNano()%1e9 != 65584684 {
		t.Errorf("time %v lost its nanoseconds", p.Time)
	}
}

// FuzzReadPDML feeds ReadPDML arbitrary input: it must return PDUs or an
// error, never panic.
func FuzzReadPDML(f *testing.F) {
	f.Add([]byte(samplePDML))
	f.Add([]byte(`<pdml><packet><proto name="distcache"><field name="distcache.request_uid" show="99999999999"/></proto></packet></pdml>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pdus, err := ReadPDML(bytes.NewReader(b))
		if err == nil {
			_ = Transactions(pdus)
		}
	})
}
