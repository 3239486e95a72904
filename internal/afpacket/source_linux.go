package afpacket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The ring's defaults: 64 blocks of 256 KiB, 16 MiB in all (what rate
// that keeps up with on loopback is in docs/benchmarks.md, "A live tap on
// loopback"). A block is handed to the reader when it is full or
// BlockTimeout after its first packet, so a quiet tap's packets wait at
// most that long; and since a handed-over block is used up however
// little it holds, a reader stalled for DefaultBlockCount ×
// DefaultBlockTimeout while packets trickle in finds the ring full.
const (
	DefaultBlockSize    = 256 << 10
	DefaultBlockCount   = 64
	DefaultBlockTimeout = 10 * time.Millisecond
)

// Options shape the ring. Zero fields take the defaults above.
type Options struct {
	// BlockSize is the size of one ring block in bytes: a multiple of the
	// page size. A packet longer than a block less its header is
	// truncated.
	BlockSize int
	// BlockCount is the number of blocks; the ring is BlockSize ×
	// BlockCount bytes of kernel memory, never swapped out.
	BlockCount int
	// BlockTimeout is how long the kernel fills a block before it hands
	// it to the reader anyway; at least a millisecond.
	BlockTimeout time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockCount == 0 {
		o.BlockCount = DefaultBlockCount
	}
	if o.BlockTimeout == 0 {
		o.BlockTimeout = DefaultBlockTimeout
	}
	page := os.Getpagesize()
	switch {
	case o.BlockSize < 0 || o.BlockSize%page != 0:
		return o, fmt.Errorf("block size %d is not a positive multiple of the page size (%d)", o.BlockSize, page)
	case o.BlockCount < 0:
		return o, fmt.Errorf("block count %d is negative", o.BlockCount)
	case o.BlockSize > 1<<30 || o.BlockCount > 1<<16 || o.BlockSize*o.BlockCount > 1<<32-1:
		return o, fmt.Errorf("ring of %d blocks of %d bytes is larger than 4 GiB", o.BlockCount, o.BlockSize)
	case o.BlockTimeout < time.Millisecond:
		return o, fmt.Errorf("block timeout %v is under a millisecond", o.BlockTimeout)
	}
	return o, nil
}

// ErrNeedCapNetRaw is the refusal of a packet socket to a process without
// the capability.
var ErrNeedCapNetRaw = errors.New("CAP_NET_RAW is needed to capture packets (run as root, or grant the capability)")

// Stats are the kernel's counts for a Source since it was opened.
type Stats struct {
	// Packets passed the filter, those dropped included.
	Packets uint64
	// Drops found every ring block full and were lost.
	Drops uint64
	// FreezeQueueCount is how many times the ring was full (the kernel
	// froze its queue until the reader gave a block back).
	FreezeQueueCount uint64
}

// Source captures one TCP port's packets on one interface through a
// TPACKET_V3 ring. Reads are meant for one goroutine (they serialize);
// Stats, LinkType and Close may be called from any.
type Source struct {
	iface    string
	ifindex  int
	linkType layers.LinkType

	fd   int
	wake int // an eventfd, in every poll beside fd: Close writes it
	ring []byte
	opts Options

	closed atomic.Bool

	// rmu is held by a read for its whole length, waits included, and by
	// Close before it unmaps the ring, so no read ever touches it after.
	rmu   sync.Mutex
	block int    // the block being read (or waited for)
	owned bool   // the reader has the block and has not given it back
	left  uint32 // packets of the block not yet returned
	next  int    // offset in ring of the next packet's header

	// smu orders Stats with Close, which closes fd.
	smu      sync.Mutex
	fdClosed bool
	stats    Stats
}

var (
	_ gopacket.PacketDataSource         = (*Source)(nil)
	_ gopacket.ZeroCopyPacketDataSource = (*Source)(nil)
)

// Offsets in the ring, from linux/if_packet.h: a block begins with
// tpacket_block_desc (version, offset_to_priv, then tpacket_hdr_v1), and
// each packet with tpacket3_hdr followed by a sockaddr_ll at
// TPACKET_ALIGN(sizeof(tpacket3_hdr)).
const (
	blockStatusOff   = 8
	blockNumPktsOff  = 12
	blockFirstPktOff = 16

	pktNextOff    = 0
	pktSecOff     = 4
	pktNsecOff    = 8
	pktSnaplenOff = 12
	pktLenOff     = 16
	pktMacOff     = 24
)

// Open starts a capture of TCP to and from port on the interface named
// iface.
func Open(iface string, port uint16, opts Options) (*Source, error) {
	s, err := open(iface, port, opts)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", iface, err)
	}
	return s, nil
}

func open(iface string, port uint16, opts Options) (*Source, error) {
	if port == 0 {
		return nil, errors.New("port 0 names no server")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("no such interface: %w", err)
	}
	hatype, err := hardwareType(iface)
	if err != nil {
		return nil, err
	}
	f, sockType, link := ipFraming, unix.SOCK_DGRAM, layers.LinkTypeRaw
	loopback := hatype == unix.ARPHRD_LOOPBACK
	if hatype == unix.ARPHRD_ETHER || loopback {
		f, sockType, link = ethernetFraming, unix.SOCK_RAW, layers.LinkTypeEthernet
	}
	filter, err := tcpPortFilter(f, port)
	if err != nil {
		return nil, err
	}

	// Protocol 0: the socket receives nothing until bind names one, by
	// which time the filter and the ring are in place.
	fd, err := unix.Socket(unix.AF_PACKET, sockType|unix.SOCK_CLOEXEC, 0)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return nil, ErrNeedCapNetRaw
	}
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	s := &Source{iface: iface, ifindex: ifi.Index, linkType: link, fd: fd, wake: -1, opts: opts}
	if err := s.setup(filter, loopback); err != nil {
		s.release()
		return nil, err
	}
	return s, nil
}

func (s *Source) setup(filter []bpf.RawInstruction, loopback bool) error {
	prog := make([]unix.SockFilter, len(filter))
	for i, ins := range filter {
		prog[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(s.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attaching the filter: %w", err)
	}
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fmt.Errorf("asking for TPACKET_V3: %w", err)
	}
	if loopback {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return fmt.Errorf("refusing the outgoing copies of looped packets (PACKET_IGNORE_OUTGOING, Linux 4.20): %w", err)
		}
	}
	// Frames have no meaning in TPACKET_V3 (packets are packed into
	// blocks), but the kernel checks that the counts agree.
	const frameSize = 1 << 11
	req := unix.TpacketReq3{
		Block_size:     uint32(s.opts.BlockSize),
		Block_nr:       uint32(s.opts.BlockCount),
		Frame_size:     frameSize,
		Frame_nr:       uint32(s.opts.BlockSize / frameSize * s.opts.BlockCount),
		Retire_blk_tov: uint32(s.opts.BlockTimeout / time.Millisecond),
	}
	if err := unix.SetsockoptTpacketReq3(s.fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("setting up a ring of %d blocks of %d bytes: %w", s.opts.BlockCount, s.opts.BlockSize, err)
	}
	ring, err := unix.Mmap(s.fd, 0, s.opts.BlockSize*s.opts.BlockCount, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mapping the ring: %w", err)
	}
	s.ring = ring
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	s.wake = wake
	sa := unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: s.ifindex}
	if err := unix.Bind(s.fd, &sa); err != nil {
		return fmt.Errorf("binding to the interface: %w", err)
	}
	return nil
}

// hardwareType returns the interface's ARPHRD type.
func hardwareType(iface string) (uint16, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket for SIOCGIFHWADDR: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFHWADDR, ifr); err != nil {
		return 0, fmt.Errorf("reading the link type (SIOCGIFHWADDR): %w", err)
	}
	// The answer is a sockaddr whose family is the ARPHRD type.
	return ifr.Uint16(), nil
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// LinkType is the link type of the packets the Source returns:
// Ethernet, or Raw (IP first) for a cooked capture.
func (s *Source) LinkType() layers.LinkType { return s.linkType }

// Interface is the name of the interface captured.
func (s *Source) Interface() string { return s.iface }

// ReadPacketData returns the next packet in a new slice of its own.
func (s *Source) ReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	data, ci, err := s.ZeroCopyReadPacketData()
	if err != nil {
		return nil, ci, err
	}
	return append([]byte(nil), data...), ci, nil
}

// ZeroCopyReadPacketData returns the next packet, waiting for one. The
// data is in the ring and is the caller's only until the next read or
// Close. After Close it returns io.EOF.
func (s *Source) ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for {
		if s.closed.Load() {
			return nil, gopacket.CaptureInfo{}, io.EOF
		}
		if s.left > 0 {
			data, ci := s.packet(s.next)
			s.left--
			s.next += int(s.u32(s.next + pktNextOff))
			return data, ci, nil
		}
		base := s.block * s.opts.BlockSize
		if s.owned {
			// Every packet of the block was returned and the caller is
			// done with the last one: the block goes back to the kernel.
			atomic.StoreUint32(s.word(base+blockStatusOff), unix.TP_STATUS_KERNEL)
			s.owned = false
			s.block = (s.block + 1) % s.opts.BlockCount
			continue
		}
		if atomic.LoadUint32(s.word(base+blockStatusOff))&unix.TP_STATUS_USER != 0 {
			s.owned = true
			s.left = s.u32(base + blockNumPktsOff)
			s.next = base + int(s.u32(base+blockFirstPktOff))
			continue
		}
		if err := s.wait(); err != nil {
			return nil, gopacket.CaptureInfo{}, err
		}
	}
}

// packet reads the packet whose header is at off.
func (s *Source) packet(off int) ([]byte, gopacket.CaptureInfo) {
	mac := int(binary.NativeEndian.Uint16(s.ring[off+pktMacOff:]))
	snap := int(s.u32(off + pktSnaplenOff))
	ci := gopacket.CaptureInfo{
		Timestamp:      time.Unix(int64(s.u32(off+pktSecOff)), int64(s.u32(off+pktNsecOff))),
		CaptureLength:  snap,
		Length:         int(s.u32(off + pktLenOff)),
		InterfaceIndex: s.ifindex,
	}
	start := off + mac
	return s.ring[start : start+snap : start+snap], ci
}

func (s *Source) u32(off int) uint32 { return binary.NativeEndian.Uint32(s.ring[off:]) }

func (s *Source) word(off int) *uint32 { return (*uint32)(unsafe.Pointer(&s.ring[off])) }

// wait blocks until the kernel may have handed over a block, or Close
// was called.
func (s *Source) wait() error {
	fds := []unix.PollFd{
		{Fd: int32(s.fd), Events: unix.POLLIN | unix.POLLERR},
		{Fd: int32(s.wake), Events: unix.POLLIN},
	}
	if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("capture on %s: poll: %w", s.iface, err)
	}
	if fds[0].Revents&unix.POLLERR != 0 {
		// The interface went down (ENETDOWN) or away; reading SO_ERROR
		// clears it, and capture resumes if the interface comes back.
		errno, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return fmt.Errorf("capture on %s: reading its error: %w", s.iface, err)
		}
		if errno != 0 {
			return fmt.Errorf("capture on %s: %w", s.iface, unix.Errno(errno))
		}
	}
	return nil
}

// Stats returns the kernel's counts since Open; after Close, the last
// counts.
func (s *Source) Stats() (Stats, error) {
	s.smu.Lock()
	defer s.smu.Unlock()
	if err := s.collect(); err != nil {
		return s.stats, err
	}
	return s.stats, nil
}

// collect adds the kernel's counts since the last call (the kernel
// resets them each time they are read). smu must be held.
func (s *Source) collect() error {
	if s.fdClosed {
		return nil
	}
	st, err := unix.GetsockoptTpacketStatsV3(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return fmt.Errorf("capture on %s: PACKET_STATISTICS: %w", s.iface, err)
	}
	// tp_packets counts the drops too.
	s.stats.Packets += uint64(st.Packets)
	s.stats.Drops += uint64(st.Drops)
	s.stats.FreezeQueueCount += uint64(st.Freeze_q_cnt)
	return nil
}

// Stop ends the reads: a read waiting for packets, and every read after,
// returns io.EOF. It leaves the ring mapped, so a packet a zero-copy read
// returned stays readable until Close; a reader that uses packets on one
// goroutine while another ends the capture calls Stop, waits for the
// reader to see io.EOF, then Close.
func (s *Source) Stop() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	// A failed write (it cannot fail on an eventfd at 0) would leave a
	// blocked reader asleep, and Close waiting for it.
	if _, err := unix.Write(s.wake, one[:]); err != nil {
		return fmt.Errorf("capture on %s: waking the reader: %w", s.iface, err)
	}
	return nil
}

// Close ends the capture: it stops the reads (see Stop), waits for a read
// in progress to return, and releases the ring and the socket; a packet
// a zero-copy read returned must not be used after it. Stats keeps its
// last counts.
func (s *Source) Close() error {
	if err := s.Stop(); err != nil {
		return err
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.fdClosed {
		return nil
	}
	err := s.collect()
	s.release()
	return err
}

// release frees the ring and the descriptors.
func (s *Source) release() {
	if s.ring != nil {
		unix.Munmap(s.ring)
		s.ring = nil
	}
	if s.wake >= 0 {
		unix.Close(s.wake)
	}
	unix.Close(s.fd)
	s.fdClosed = true
}
