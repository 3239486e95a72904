// Package pcapfile reads tcpdump captures (pcap and pcapng) as the
// events a snoop proxy in front of the captured server would have given:
// the packets go through sniff's TCP reassembly into a proxy.Observer,
// and its events come out in the API's form (internal/apievent, the
// daemon's own conversion), one at a time, for snoopctl's read and plot
// to filter, print and count as they do the events of a JSON capture.
// What the capture missed comes out as capture-gap events, never as a
// guessed transaction.
package pcapfile
