/* Socket helpers with deadlines, abort flags and EINTR retries; see sock.h. IPv4 and IPv6. */
#define _GNU_SOURCE
#include "common/sock.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

dtr_result dtr__parse_hostport(const char *s, char *host, size_t hostcap, int *port, char *err, size_t cap) {
  if (!s || !*s) return dtr__fail(err, cap, DTR_ERR_INVALID, "empty address (expected HOST:PORT)");
  const char *colon;
  const char *h = s;
  size_t hlen;
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':') return dtr__fail(err, cap, DTR_ERR_INVALID, "'%s' is not [IPV6]:PORT", s);
    h = s + 1;
    hlen = (size_t)(close - h);
    colon = close + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon) return dtr__fail(err, cap, DTR_ERR_INVALID, "'%s' has no port (expected HOST:PORT)", s);
    hlen = (size_t)(colon - s);
  }
  if (hlen + 1 > hostcap) return dtr__fail(err, cap, DTR_ERR_INVALID, "host name in '%s' is too long", s);
  char *end;
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  if (errno || *end || colon[1] == '\0' || p < 0 || p > 65535)
    return dtr__fail(err, cap, DTR_ERR_INVALID, "'%s' has a bad port (expected 0-65535)", s);
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  *port = (int)p;
  return DTR_OK;
}

static dtr_result resolve(const char *host, int port, int passive, struct addrinfo **res, char *err,
                          size_t cap) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  char ports[16];
  snprintf(ports, sizeof ports, "%d", port);
  const char *h = (host && *host) ? host : NULL;
  if (!h && passive) hints.ai_family = AF_INET;
  int rc = getaddrinfo(h, ports, &hints, res);
  if (rc != 0)
    return dtr__fail(err, cap, DTR_ERR_CONNECTION, "cannot resolve host '%s': %s", host ? host : "",
                     gai_strerror(rc));
  return DTR_OK;
}

dtr_result dtr__listen(const char *host, int port, int backlog, int *fd_out, int *bound_port, char *err,
                       size_t cap) {
  struct addrinfo *res;
  dtr_result rc = resolve(host, port, 1, &res, err, cap);
  if (rc) return rc;
  int fd = -1, saved = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) break;
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    dtr_result code = saved == EADDRINUSE ? DTR_ERR_ADDRINUSE : DTR_ERR_SYSTEM;
    return dtr__fail(err, cap, code, "cannot listen on %s:%d: %s", (host && *host) ? host : "0.0.0.0", port,
                     strerror(saved));
  }
  if (bound_port) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
  }
  *fd_out = fd;
  return DTR_OK;
}

static int aborted(const atomic_int *flag) {
  return flag && atomic_load(flag);
}

/* poll() one fd for events until deadline, waking every 100 ms to look at the abort flag. */
static dtr_result wait_fd(int fd, short events, int64_t deadline, const atomic_int *abort_flag,
                          const char *what, char *err, size_t cap) {
  for (;;) {
    if (aborted(abort_flag)) return dtr__fail(err, cap, DTR_ERR_ABORTED, "%s aborted", what);
    int left = dtr__ms_left(deadline);
    if (left == 0) return dtr__fail(err, cap, DTR_ERR_TIMEOUT, "%s timed out", what);
    int slice = abort_flag ? 100 : -1;
    if (left > 0 && (slice < 0 || left < slice)) slice = left;
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, slice);
    if (n < 0 && errno != EINTR) return dtr__fail(err, cap, DTR_ERR_SYSTEM, "poll: %s", strerror(errno));
    if (n > 0) return DTR_OK;
  }
}

/* Descriptors open in this process (the entries of /proc/self/fd, less the directory's own). */
static long fds_open(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return 0;
  long k = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') k++;
  closedir(d);
  return k > 0 ? k - 1 : 0;
}

dtr_result dtr__fd_room(int more, long *raised_to, char *err, size_t cap) {
  enum { MARGIN = 64 }; /* files, pipes and sockets opened meanwhile */
  *raised_to = 0;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return DTR_OK;
  long open_now = fds_open();
  rlim_t need = (rlim_t)open_now + (rlim_t)more, want = need + MARGIN;
  if (rl.rlim_cur >= want) return DTR_OK;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
    return dtr__fail(
        err, cap, DTR_ERR_SYSTEM,
        "%ld descriptors are open and %d more sockets are needed, but the hard open-file limit is "
        "%llu: raise it (ulimit -Hn, LimitNOFILE= or nofile in limits.conf)",
        open_now, more, (unsigned long long)rl.rlim_max);
  /* Raise with headroom for later communicators (splits build meshes of their own), not to the hard
   * limit itself, which may be huge and slows programs that close every descriptor up to it. */
  rlim_t to = want * 2 > want + 1024 ? want * 2 : want + 1024;
  if (rl.rlim_max != RLIM_INFINITY && to > rl.rlim_max) to = rl.rlim_max;
  if (to <= rl.rlim_cur) return DTR_OK; /* at the hard limit already, which still fits */
  rl.rlim_cur = to;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot raise the open-file limit to %llu: %s",
                     (unsigned long long)to, strerror(errno));
  *raised_to = (long)to;
  return DTR_OK;
}

int dtr__fd_exhausted(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

dtr_result dtr__connect(const char *host, int port, int64_t deadline, int retry_ms,
                        const atomic_int *abort_flag, int *fd_out, char *err, size_t cap) {
  int last_errno = 0;
  for (;;) {
    struct addrinfo *res;
    dtr_result rc = resolve(host, port, 0, &res, err, cap);
    if (rc) return rc;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
      int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0 && dtr__fd_exhausted(errno)) {
        int e = errno;
        freeaddrinfo(res);
        return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot open a socket to connect to %s:%d: %s", host, port,
                         strerror(e));
      }
      if (fd < 0) {
        last_errno = errno;
        continue;
      }
      int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
      if (r < 0 && errno == EINPROGRESS) {
        char werr[64];
        dtr_result w = wait_fd(fd, POLLOUT, deadline, abort_flag, "connect", werr, sizeof werr);
        if (w != DTR_OK) {
          close(fd);
          freeaddrinfo(res);
          return dtr__fail(err, cap, w, "connecting to %s:%d %s", host, port,
                           w == DTR_ERR_TIMEOUT ? "timed out" : "was aborted");
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        r = soerr ? -1 : 0;
        errno = soerr;
      }
      if (r == 0) {
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        freeaddrinfo(res);
        *fd_out = fd;
        return DTR_OK;
      }
      last_errno = errno;
      close(fd);
    }
    freeaddrinfo(res);
    if (aborted(abort_flag))
      return dtr__fail(err, cap, DTR_ERR_ABORTED, "connecting to %s:%d aborted", host, port);
    int left = dtr__ms_left(deadline);
    if (retry_ms <= 0 || left == 0)
      return dtr__fail(err, cap, left == 0 ? DTR_ERR_TIMEOUT : DTR_ERR_CONNECTION,
                       "cannot connect to %s:%d: %s%s", host, port, strerror(last_errno),
                       left == 0 ? " (deadline passed)" : "");
    int nap = (left > 0 && left < retry_ms) ? left : retry_ms;
    struct timespec ts = {nap / 1000, (long)(nap % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
}

dtr_result dtr__write_full(int fd, const void *buf, size_t len, int64_t deadline,
                           const atomic_int *abort_flag, char *err, size_t cap) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      dtr_result rc = wait_fd(fd, POLLOUT, deadline, abort_flag, "send", err, cap);
      if (rc) return rc;
      continue;
    }
    return dtr__fail(err, cap, DTR_ERR_CONNECTION, "send: %s", n < 0 ? strerror(errno) : "connection closed");
  }
  return DTR_OK;
}

dtr_result dtr__read_full(int fd, void *buf, size_t len, int64_t deadline, const atomic_int *abort_flag,
                          char *err, size_t cap) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n == 0) return dtr__fail(err, cap, DTR_ERR_CONNECTION, "connection closed by peer");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      dtr_result rc = wait_fd(fd, POLLIN, deadline, abort_flag, "receive", err, cap);
      if (rc) return rc;
      continue;
    }
    return dtr__fail(err, cap, DTR_ERR_CONNECTION, "recv: %s", strerror(errno));
  }
  return DTR_OK;
}

static void sa_to_str(const struct sockaddr *sa, char *addr, size_t cap, int *port) {
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
      inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], addr, (socklen_t)cap);
    else
      inet_ntop(AF_INET6, &s6->sin6_addr, addr, (socklen_t)cap);
    if (port) *port = ntohs(s6->sin6_port);
  } else {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, addr, (socklen_t)cap);
    if (port) *port = ntohs(s4->sin_port);
  }
}

dtr_result dtr__sock_local_addr(int fd, char *addr, size_t addrcap) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) return DTR_ERR_SYSTEM;
  sa_to_str((struct sockaddr *)&ss, addr, addrcap, NULL);
  return DTR_OK;
}

void dtr__sock_peer_name(int fd, char *out, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char a[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
    sa_to_str((struct sockaddr *)&ss, a, sizeof a, &port);
  snprintf(out, cap, "%s:%d", a, port);
}

dtr_result dtr__find_free_port(const char *host, int *port, char *err, size_t cap) {
  int fd;
  dtr_result rc = dtr__listen(host, 0, 1, &fd, port, err, cap);
  if (rc) return rc;
  close(fd);
  return DTR_OK;
}

int dtr__host_is_local(const char *host) {
  struct addrinfo hints, *res;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host, NULL, &hints, &res) != 0) return 0;
  struct ifaddrs *ifs;
  int local = 0;
  if (getifaddrs(&ifs) == 0) {
    for (struct addrinfo *ai = res; ai && !local; ai = ai->ai_next) {
      char want[INET6_ADDRSTRLEN];
      sa_to_str(ai->ai_addr, want, sizeof want, NULL);
      for (struct ifaddrs *i = ifs; i && !local; i = i->ifa_next) {
        if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
          continue;
        char have[INET6_ADDRSTRLEN];
        sa_to_str(i->ifa_addr, have, sizeof have, NULL);
        if (strcmp(want, have) == 0) local = 1;
      }
    }
    freeifaddrs(ifs);
  }
  freeaddrinfo(res);
  return local;
}

dtr_result dtr__random_bytes(void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return DTR_ERR_SYSTEM;
    }
    p += n;
    len -= (size_t)n;
  }
  return DTR_OK;
}
