package loadgen

import (
	"encoding/binary"
	"hash/fnv"
)

// Session data is a pure function of (run key, session, version), so
// Verify can check a GET answer by regenerating the expected bytes on the
// fly instead of keeping every stored session in memory. The version
// changes with every ADD, so a server returning an older session (or
// another session's data) is caught, not only random corruption.

// dataKey mixes the seed and the id prefix, so that two runs sharing a
// server (different prefixes) never store the same bytes.
func dataKey(seed uint64, prefix string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(prefix))
	return mix64(seed ^ h.Sum64())
}

// mix64 is the splitmix64 finaliser: a cheap bijection whose output bits
// all depend on every input bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// dataSpec names one version of one session's data.
type dataSpec struct {
	state uint64 // seeds the byte stream
	n     int    // length
}

func specFor(key uint64, session int, version uint32, lo, hi int) dataSpec {
	s := mix64(key + uint64(session)*0x9e3779b97f4a7c15 + uint64(version)*0xd1b54a32d192ed03)
	n := lo
	if hi > lo {
		n += int(mix64(s) % uint64(hi-lo+1))
	}
	return dataSpec{state: s, n: n}
}

// appendData appends the data of sp to dst.
func appendData(dst []byte, sp dataSpec) []byte {
	var w [8]byte
	st := sp.state
	for n := sp.n; n > 0; n -= 8 {
		st += 0x9e3779b97f4a7c15
		binary.LittleEndian.PutUint64(w[:], mix64(st))
		dst = append(dst, w[:min(n, 8)]...)
	}
	return dst
}

// diffData compares got with the data of sp without materialising it. It
// returns -1 when they are equal, else the offset of the first differing
// byte (len of the shorter one when one is a prefix of the other).
func diffData(got []byte, sp dataSpec) int {
	st := sp.state
	var w [8]byte
	n := min(len(got), sp.n)
	i := 0
	for ; i+8 <= n; i += 8 {
		st += 0x9e3779b97f4a7c15
		if binary.LittleEndian.Uint64(got[i:]) != mix64(st) {
			binary.LittleEndian.PutUint64(w[:], mix64(st))
			for j := range 8 {
				if got[i+j] != w[j] {
					return i + j
				}
			}
		}
	}
	if i < n {
		st += 0x9e3779b97f4a7c15
		binary.LittleEndian.PutUint64(w[:], mix64(st))
		for j := 0; i+j < n; j++ {
			if got[i+j] != w[j] {
				return i + j
			}
		}
	}
	if len(got) != sp.n {
		return n
	}
	return -1
}
