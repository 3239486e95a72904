// Package metrics exports snoopd's proxy counters to Prometheus.
//
// NewHandler serves /metrics: it reads the proxies' own counters and
// latency histograms (proxy.Stats, through the daemon's EachProxy) on
// every scrape, with no API message in between, so the numbers are those
// the control API would report at that moment and the histograms keep
// their buckets. It writes the text exposition straight to the response
// through a buffer of fixed size (gzipped when the client asks), one
// family at a time, walking the proxies once per family with one reused
// read, so a scrape's memory does not grow with the proxies and
// concurrent scrapes (at most four; more get 503) do not multiply it.
// Nothing is kept between scrapes: a proxy deleted between two scrapes
// simply disappears, and one created again starts its counters from zero
// (Prometheus treats that as a counter reset). The export counters and the
// Go runtime and process metrics, of a size independent of the proxies,
// go through a private client_golang registry; nothing here touches the
// client library's global registry.
//
// Collector builds the same families as client_golang metrics, for a
// program with a registry of its own and few proxies (NewRegistry: the
// whole of /metrics that way); the tests hold the handler's exposition to
// the Collector's, parsed.
//
// Histograms selects the latency histograms (snoopd --metrics-histograms):
// proxies (the default) exports the daemon-wide histogram per operation
// and the per-proxy one; ops only the daemon-wide ones; none neither. The
// summary and the maximum are exported per proxy in all three.
//
// Metrics, each per proxy with the label proxy unless noted:
//
//	snoopd_proxy_info{proxy,listen_address,server}      gauge, always 1
//	snoopd_proxy_state{proxy,state}                     gauge, 1 for the current state of
//	                                                    listening, disabled, failed; 0 for the others
//	snoopd_proxy_connections_active                     gauge
//	snoopd_proxy_connections_total                      counter, clients accepted
//	snoopd_proxy_connections_refused_total              counter, clients closed at the connection limit
//	snoopd_proxy_connect_failures_total                 counter, clients closed because the server was unreachable
//	snoopd_proxy_protocol_errors_total                  counter
//	snoopd_proxy_timeouts_total                         counter, connections closed by the idle, message
//	                                                    or response timeout
//	snoopd_proxy_loop_refusals_total                    counter, server connections refused as a proxy loop
//	snoopd_proxy_loop_echoes_total                      counter, clients closed as echoes of a forwarding
//	                                                    loop through another daemon
//	snoopd_proxy_condition{proxy,condition}             gauge, 1 for each condition the proxy is in now
//	                                                    (forwarding-loop), 0 for the others
//	snoopd_proxy_spares_dialled_total                   counter, spare server connections connected ahead
//	snoopd_proxy_spare_failures_total                   counter, spare dials that failed
//	snoopd_proxy_spares_lost_total                      counter, spares the server closed before a client took them
//	snoopd_proxy_bytes_total{proxy,direction}           counter, direction "up" (client to server) or "down"
//	snoopd_proxy_frames_total{proxy,direction}          counter, frames decoded
//	snoopd_proxy_transactions_total{proxy,op,result}    counter, op add|get|remove|have (or "unspecified"
//	                                                    for orphans without one), result as in the API
//	                                                    ("ok", "hit", "miss", "notok", "exists", "unanswered", ...)
//	snoopd_proxy_latency_seconds{proxy,quantile}        summary of answered transactions: quantiles 0.5,
//	                                                    0.9 and 0.99 (within about 3%), _count, and _sum (exact)
//	snoopd_proxy_latency_max_seconds                    gauge, the slowest answered transaction
//	snoopd_proxy_transaction_duration_seconds{proxy,le} histogram of the same latencies, buckets from
//	                                                    25µs to 10s (with proxies only)
//	snoopd_proxy_fault_matched_total{proxy,fault}       counter, messages a fault selected
//	snoopd_proxy_fault_applied_total{proxy,fault}       counter, messages a fault was applied to
//
// and for a tap only (a tap's listen_address is ""):
//
//	snoopd_proxy_tap_kernel_packets_total               counter, packets the kernel's filter passed
//	snoopd_proxy_tap_kernel_drops_total                 counter, packets lost to a full capture ring
//	snoopd_proxy_tap_capture_gaps_total                 counter, stretches of bytes the capture missed
//	snoopd_proxy_tap_capture_missing_bytes_total        counter, their bytes
//	snoopd_proxy_tap_resyncs_total                      counter, decoder hunts for a message start
//	snoopd_proxy_tap_resync_skipped_bytes_total         counter, bytes passed over while hunting
//	snoopd_proxy_tap_read_errors_total                  counter, failed reads of the capture
//
// and for the daemon as a whole:
//
//	snoopd_build_info{version}                          gauge, always 1
//	snoopd_start_time_seconds                           gauge, Unix time the daemon started
//	snoopd_proxies                                      gauge
//	snoopd_watchers                                     gauge, open event streams
//	snoopd_events_published_total                       counter, events the proxies published
//	snoopd_transaction_duration_seconds{op,le}          histogram of all proxies' answered transactions
//	                                                    by operation (with ops and proxies)
//
// The summary gives the daemon's own percentiles; the histograms are the
// ones to aggregate across proxies and daemons (summaries cannot be).
package metrics
