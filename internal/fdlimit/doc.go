// Package fdlimit raises the process's limit on open files and divides it
// between the data path and a reserve for the control plane.
//
// A proxy holds two descriptors per client (the client and its server
// connection) plus spares, so a flood of idle clients can use up every
// descriptor the process may open; the control API then cannot accept a
// connection, and the operator cannot see or stop what is happening.
// snoopd raises the soft limit as far as it may go and bounds the data
// path a reserve below it.
package fdlimit
