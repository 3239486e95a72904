package afpacket

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// framing is how a captured packet begins, which decides where the
// filter finds the IP header.
type framing int

const (
	// ethernetFraming: a 14-byte Ethernet header, then the IP header.
	ethernetFraming framing = iota
	// ipFraming: the IP header first (a cooked capture, or an interface
	// without a link header).
	ipFraming
)

const (
	etherHeaderLen = 14
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	protoTCP       = 6
	ipv6HeaderLen  = 40

	// snapLen is what the filter keeps of a matching packet: more than
	// the largest packet a loopback interface (MTU 65536) or GSO hands a
	// packet socket, so only the ring's block size can truncate.
	snapLen = 256 << 10
)

// tcpPortFilter returns the classic BPF program that accepts TCP
// segments over IPv4 or IPv6 whose source or destination port is port,
// for packets framed as f. It checks what tcpdump's "tcp port N" checks:
// the IPv4 protocol or the IPv6 next header must be TCP, and IPv4
// fragments after the first, which carry no TCP header, are refused.
func tcpPortFilter(f framing, port uint16) ([]bpf.RawInstruction, error) {
	// l is the offset of the IP header.
	l := uint32(0)
	var prog []bpf.Instruction
	// The jumps below are relative, so the program is built in blocks
	// whose lengths are fixed; the labels name them.
	const (
		reject = "reject"
		accept = "accept"
		ipv4   = "ipv4"
		ipv6   = "ipv6"
	)
	type jump struct {
		at       int
		skipTrue string
		skipElse string
	}
	var jumps []jump
	labels := map[string]int{}
	cond := func(ins bpf.JumpIf, ifTrue, ifElse string) {
		jumps = append(jumps, jump{len(prog), ifTrue, ifElse})
		prog = append(prog, ins)
	}
	switch f {
	case ethernetFraming:
		l = etherHeaderLen
		prog = append(prog, bpf.LoadAbsolute{Off: 12, Size: 2})
		cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv4}, ipv4, "")
		cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv6}, ipv6, reject)
	case ipFraming:
		prog = append(prog,
			bpf.LoadAbsolute{Off: 0, Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
		)
		cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4}, ipv4, "")
		cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6}, ipv6, reject)
	default:
		return nil, fmt.Errorf("unknown framing %d", f)
	}

	labels[ipv4] = len(prog)
	prog = append(prog, bpf.LoadAbsolute{Off: l + 9, Size: 1})
	cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoTCP}, "", reject)
	prog = append(prog, bpf.LoadAbsolute{Off: l + 6, Size: 2})
	cond(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff}, reject, "")
	// X = the IPv4 header's length, from its IHL.
	prog = append(prog, bpf.LoadMemShift{Off: l})
	prog = append(prog, bpf.LoadIndirect{Off: l, Size: 2})
	cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(port)}, accept, "")
	prog = append(prog, bpf.LoadIndirect{Off: l + 2, Size: 2})
	cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(port)}, accept, reject)

	labels[ipv6] = len(prog)
	prog = append(prog, bpf.LoadAbsolute{Off: l + 6, Size: 1})
	cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoTCP}, "", reject)
	prog = append(prog, bpf.LoadAbsolute{Off: l + ipv6HeaderLen, Size: 2})
	cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(port)}, accept, "")
	prog = append(prog, bpf.LoadAbsolute{Off: l + ipv6HeaderLen + 2, Size: 2})
	cond(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(port)}, accept, reject)

	labels[accept] = len(prog)
	prog = append(prog, bpf.RetConstant{Val: snapLen})
	labels[reject] = len(prog)
	prog = append(prog, bpf.RetConstant{Val: 0})

	// An empty label falls through to the next instruction.
	for _, j := range jumps {
		ins := prog[j.at].(bpf.JumpIf)
		skip := func(label string) uint8 {
			if label == "" {
				return 0
			}
			return uint8(labels[label] - j.at - 1)
		}
		ins.SkipTrue, ins.SkipFalse = skip(j.skipTrue), skip(j.skipElse)
		prog[j.at] = ins
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assembling the filter: %w", err)
	}
	return raw, nil
}
