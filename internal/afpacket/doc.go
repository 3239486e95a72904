// Package afpacket captures one TCP port's packets from a network
// interface without being in their path: a Linux AF_PACKET socket bound
// to the interface, a kernel BPF filter that keeps only TCP to or from
// the port (IPv4 and IPv6), and a TPACKET_V3 ring the kernel fills and
// the reader maps, so a packet is never copied between kernel and user
// space. A Source is a gopacket PacketDataSource and
// ZeroCopyPacketDataSource and names its link type, which is all a TCP
// reassembler needs from it.
//
// Invariants:
//
//   - Nothing but the port's TCP packets reaches the ring: the filter is
//     attached before the socket is bound, so there is no moment in which
//     unfiltered packets arrive.
//   - The filter matches the interface's framing, read from its ARPHRD
//     type: Ethernet and loopback interfaces are captured with their
//     14-byte Ethernet header (link type Ethernet); every other kind is
//     captured cooked, the kernel removing whatever link header it has,
//     so packets begin with the IP header (link type Raw).
//   - On a loopback interface every packet is seen once: the kernel hands
//     a packet socket each looped packet twice, leaving and arriving, and
//     the leaving copy is refused in the kernel (PACKET_IGNORE_OUTGOING).
//     On other interfaces both directions are kept, since a tap on the
//     server's own host sees the server's answers only as outgoing.
//   - A packet larger than a ring block (less its header) is truncated:
//     its CaptureInfo then has CaptureLength < Length.
//   - Packets the kernel could not put in the ring (the reader fell
//     behind and every block was full) are counted by the kernel and
//     reported by Stats; they are never silently missing.
//   - Stop and Close wake a reader blocked waiting for packets (an
//     eventfd beside the socket in its poll); reads after either return
//     io.EOF. Only Close unmaps the ring, so a packet a zero-copy read
//     returned stays valid across Stop, for a reader on another goroutine.
//
// Not matched: IPv6 packets whose TCP header follows extension headers,
// IPv4 fragments after the first, and frames with an 802.1Q tag left in
// the data (network cards and VLAN interfaces usually remove it).
package afpacket
