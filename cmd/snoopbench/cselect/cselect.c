/*
 * cselect: a stand-in for distcache's dc_snoop, for snoopbench.
 *
 * What it is: a small transparent proxy written the way dc_snoop works, so
 * that snoopd can be measured side by side with "a single-threaded C select
 * loop" on a machine without the distcache sources. One thread, one
 * select(2) loop (not epoll, not poll); for every accepted client a
 * blocking connect(2) to the server, made from inside the loop; bytes
 * forwarded both ways unchanged with read(2)/write(2); and both sides
 * closed at the first EOF or error on either side, as dc_snoop does.
 *
 * What it is not: dc_snoop. It is not derived from distcache's code and
 * does not use libnal. It decodes nothing (dc_snoop can print the traffic
 * it sees; this never looks at it), has none of dc_snoop's options, and
 * its buffer size (BUF_SIZE) is this file's choice, not libnal's. Figures
 * measured with it say what such a loop costs on this machine, not what
 * dc_snoop itself costs.
 *
 * Usage:  cselect -listen ADDR -server ADDR
 * ADDR as the distcache tools take it: IP:host:port, IP:port (listen on
 * every interface), IP:[v6addr]:port, or UNIX:/path. Listening on port 0
 * lets the kernel choose. Once listening it prints "ready ADDR" (the
 * address actually bound) on standard output. It runs until killed;
 * SIGTERM's default action ends it (a unix socket file is left behind, as
 * with any killed process).
 *
 * Limits: select(2) handles descriptors below FD_SETSIZE (1024) only. A
 * client whose descriptor, or whose server connection's descriptor, would
 * not fit is closed at once (refused); when the process runs out of
 * descriptors, accepting pauses until a connection closes.
 *
 * C99 with POSIX; libc only. Build: cc -O2 -o cselect cselect.c
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Bytes buffered per direction of a connection. One read fills it at most;
 * nothing more is read from that side until it has been written out. */
#define BUF_SIZE 16384

/* Every connection uses two descriptors, which must all be below
 * FD_SETSIZE; this bounds the table, a few descriptors being taken by
 * stdio and the listener. */
#define MAX_CONNS (FD_SETSIZE / 2)

/* A resolved address: what to bind or connect to. */
struct addr {
	struct addrinfo *ai; /* getaddrinfo's list (TCP), or NULL (unix) */
	struct sockaddr_un un;
};

/* One proxied connection. Direction d carries what is read from fd[d] to
 * fd[1 - d]: 0 is client to server, 1 server to client. len[d] bytes
 * from off[d] in buf[d] are still to be written; while any are, fd[d] is
 * not read (backpressure: memory stays bounded by the buffers). */
struct conn {
	int fd[2];
	size_t off[2], len[2];
	char buf[2][BUF_SIZE];
};

static struct conn *conns[MAX_CONNS];
static int nconns;

static void die(const char *what, const char *arg)
{
	fprintf(stderr, "cselect: %s %s: %s\n", what, arg, strerror(errno));
	exit(1);
}

static void usage(const char *why)
{
	fprintf(stderr, "cselect: %s\nusage: cselect -listen ADDR -server ADDR "
	                "(ADDR: IP:host:port, IP:port, IP:[v6]:port or UNIX:/path)\n", why);
	exit(2);
}

/* parse_addr resolves s ("IP:..." or "UNIX:...", prefixes in any case)
 * into a. listen allows a missing host and port 0. The host name is
 * resolved once, here, as libnal does when an address is parsed; every
 * later connect uses the result. */
static void parse_addr(const char *s, int listen, struct addr *a)
{
	memset(a, 0, sizeof *a);
	if (strncasecmp(s, "UNIX:", 5) == 0) {
		const char *path = s + 5;
		if (*path == '\0' || strlen(path) >= sizeof a->un.sun_path)
			usage("unix socket path empty or too long");
		a->un.sun_family = AF_UNIX;
		strcpy(a->un.sun_path, path);
		return;
	}
	if (strncasecmp(s, "IP:", 3) != 0)
		usage("address must start with IP: or UNIX:");
	char host[256] = "", port[16];
	const char *rest = s + 3, *p;
	if (rest[0] == '[') { /* IP:[v6]:port */
		const char *end = strchr(rest, ']');
		if (end == NULL || end[1] != ':' || (size_t)(end - rest - 1) >= sizeof host)
			usage("bad [IPv6]:port address");
		memcpy(host, rest + 1, end - rest - 1);
		p = end + 2;
	} else if ((p = strrchr(rest, ':')) != NULL) { /* IP:host:port */
		if ((size_t)(p - rest) >= sizeof host)
			usage("host name too long");
		memcpy(host, rest, p - rest);
		p++;
	} else { /* IP:port */
		p = rest;
	}
	char *end;
	long n = strtol(p, &end, 10);
	if (*p == '\0' || *end != '\0' || n < 0 || n > 65535)
		usage("bad port");
	if (!listen && (host[0] == '\0' || n == 0))
		usage("the server needs a host and a non-zero port");
	snprintf(port, sizeof port, "%ld", n);
	struct addrinfo hints = {0};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = listen ? AI_PASSIVE : 0;
	int err = getaddrinfo(host[0] ? host : NULL, port, &hints, &a->ai);
	if (err != 0) {
		fprintf(stderr, "cselect: resolve %s: %s\n", s, gai_strerror(err));
		exit(1);
	}
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Small messages go out at once, as distcache's own sockets do. */
static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* open_listener binds and listens on a, returning the descriptor. */
static int open_listener(const struct addr *a, const char *s)
{
	int fd;
	if (a->ai == NULL) {
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0 || bind(fd, (const struct sockaddr *)&a->un, sizeof a->un) < 0)
			die("listen", s);
	} else {
		int one = 1;
		fd = socket(a->ai->ai_family, SOCK_STREAM, 0);
		if (fd < 0)
			die("listen", s);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, a->ai->ai_addr, a->ai->ai_addrlen) < 0)
			die("listen", s);
	}
	if (listen(fd, 1024) < 0)
		die("listen", s);
	/* Non-blocking, so that accepting until EAGAIN never blocks the loop
	 * on a client that went away between select and accept. */
	set_nonblock(fd);
	return fd;
}

/* print_ready writes "ready ADDR" with the address the listener got. */
static void print_ready(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char host[INET6_ADDRSTRLEN];
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		die("getsockname", "");
	if (ss.ss_family == AF_UNIX) {
		printf("ready UNIX:%s\n", ((struct sockaddr_un *)&ss)->sun_path);
	} else if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		printf("ready IP:%s:%d\n", host, ntohs(in->sin_port));
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		printf("ready IP:[%s]:%d\n", host, ntohs(in6->sin6_port));
	}
	fflush(stdout);
}

/* dial connects to the server with a blocking connect, the whole loop
 * waiting meanwhile, as dc_snoop's does. With several addresses for one
 * name each is tried in turn, starting with the one that worked last.
 * Returns the descriptor or -1. */
static int dial(const struct addr *a)
{
	static const struct addrinfo *good;
	if (a->ai == NULL) {
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd >= 0 && connect(fd, (const struct sockaddr *)&a->un, sizeof a->un) == 0)
			return fd;
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (good == NULL)
		good = a->ai;
	const struct addrinfo *ai = good;
	do {
		int fd = socket(ai->ai_family, SOCK_STREAM, 0);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			good = ai;
			set_nodelay(fd);
			return fd;
		}
		if (fd >= 0)
			close(fd);
		ai = ai->ai_next ? ai->ai_next : a->ai;
	} while (ai != good);
	return -1;
}

static void close_conn(int i)
{
	close(conns[i]->fd[0]);
	close(conns[i]->fd[1]);
	free(conns[i]);
	conns[i] = conns[--nconns]; /* the table stays dense */
}

/* accept_all accepts every pending client, connects each to the server
 * and adds the pair to the table. It returns 0 when accepting should pause
 * (out of descriptors or memory), 1 otherwise. */
static int accept_all(int lfd, const struct addr *server)
{
	for (;;) {
		int cfd = accept(lfd, NULL, NULL);
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				return 0;
			return 1; /* EAGAIN: none left; anything else: that client's problem */
		}
		if (cfd >= FD_SETSIZE || nconns == MAX_CONNS) {
			close(cfd); /* refused: select could not watch it */
			continue;
		}
		int sfd = dial(server);
		if (sfd < 0 || sfd >= FD_SETSIZE) {
			/* No server (or no room for it): the client sees the
			 * connection close, as it would with dc_snoop. */
			if (sfd >= 0)
				close(sfd);
			close(cfd);
			continue;
		}
		struct conn *c = malloc(sizeof *c);
		if (c == NULL) {
			close(sfd);
			close(cfd);
			return 0;
		}
		c->fd[0] = cfd;
		c->fd[1] = sfd;
		c->off[0] = c->off[1] = c->len[0] = c->len[1] = 0;
		set_nodelay(cfd); /* fails harmlessly on a unix socket */
		set_nonblock(cfd);
		set_nonblock(sfd);
		conns[nconns++] = c;
	}
}

/* flush writes what direction d still holds. It returns -1 on an error
 * (the connection must close), 0 otherwise; a partial write keeps the
 * rest for the next time the destination is writable. */
static int flush(struct conn *c, int d)
{
	while (c->len[d] > 0) {
		ssize_t n = write(c->fd[1 - d], c->buf[d] + c->off[d], c->len[d]);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
		}
		c->off[d] += (size_t)n;
		c->len[d] -= (size_t)n;
	}
	c->off[d] = 0;
	return 0;
}

/* pump reads one buffer from fd[d] and writes it on at once. It returns
 * -1 when the connection must close: EOF or an error on either side. */
static int pump(struct conn *c, int d)
{
	ssize_t n = read(c->fd[d], c->buf[d], BUF_SIZE);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
	if (n == 0)
		return -1; /* EOF: dc_snoop closes both sides */
	c->off[d] = 0;
	c->len[d] = (size_t)n;
	return flush(c, d);
}

int main(int argc, char **argv)
{
	const char *listen_s = NULL, *server_s = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-listen") == 0 && i + 1 < argc)
			listen_s = argv[++i];
		else if (strcmp(argv[i], "-server") == 0 && i + 1 < argc)
			server_s = argv[++i];
		else
			usage("unknown or incomplete argument");
	}
	if (listen_s == NULL || server_s == NULL)
		usage("-listen and -server are required");

	/* A peer that has gone makes write fail with EPIPE instead of
	 * killing the process. */
	signal(SIGPIPE, SIG_IGN);

	struct addr la, sa;
	parse_addr(listen_s, 1, &la);
	parse_addr(server_s, 0, &sa);
	int lfd = open_listener(&la, listen_s);
	if (lfd >= FD_SETSIZE)
		die("listen", "descriptor beyond FD_SETSIZE");
	print_ready(lfd);

	int accepting = 1;
	for (;;) {
		fd_set rd, wr;
		int maxfd = -1;
		FD_ZERO(&rd);
		FD_ZERO(&wr);
		if (accepting) {
			FD_SET(lfd, &rd);
			maxfd = lfd;
		}
		/* Per direction: read the source while nothing is pending,
		 * otherwise wait until the destination can take more. */
		for (int i = 0; i < nconns; i++) {
			struct conn *c = conns[i];
			for (int d = 0; d < 2; d++) {
				int fd = c->len[d] == 0 ? c->fd[d] : c->fd[1 - d];
				FD_SET(fd, c->len[d] == 0 ? &rd : &wr);
				if (fd > maxfd)
					maxfd = fd;
			}
		}
		/* While accepting is paused, wake up now and then to try
		 * again even if no connection closes. */
		struct timeval retry = {0, 100000};
		int n = select(maxfd + 1, &rd, &wr, NULL, accepting ? NULL : &retry);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("select", "");
		}
		if (!accepting && n == 0) {
			accepting = 1;
			continue;
		}
		/* Connections first, then the listener: a connection closed
		 * here frees its descriptor numbers, and a client accepted
		 * afterwards that reuses one must not be served with this
		 * round's stale readiness. Walking backwards keeps close_conn's
		 * swap-with-last from skipping anyone. */
		for (int i = nconns - 1; i >= 0; i--) {
			struct conn *c = conns[i];
			int fail = 0;
			for (int d = 0; d < 2 && !fail; d++) {
				if (c->len[d] > 0) {
					if (FD_ISSET(c->fd[1 - d], &wr))
						fail = flush(c, d) < 0;
				} else if (FD_ISSET(c->fd[d], &rd)) {
					fail = pump(c, d) < 0;
				}
			}
			if (fail) {
				close_conn(i);
				accepting = 1; /* a descriptor came free */
			}
		}
		if (accepting && FD_ISSET(lfd, &rd))
			accepting = accept_all(lfd, &sa);
	}
}
