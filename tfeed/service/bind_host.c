/* Preloaded into `tfeed service` processes (LD_PRELOAD): a listening socket
 * bound to the wildcard address (0.0.0.0 or [::], what TensorFlow's tf.data
 * service servers always ask for) is bound to TFEED_BIND_HOST instead, so
 * the servers listen on that address only (127.0.0.1 by default).  Binds to
 * a specific address, and every outgoing connection, are left alone. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static int is_wildcard(const struct sockaddr *addr) {
  if (addr->sa_family == AF_INET)
    return ((const struct sockaddr_in *)addr)->sin_addr.s_addr == htonl(INADDR_ANY);
  if (addr->sa_family == AF_INET6)
    return memcmp(&((const struct sockaddr_in6 *)addr)->sin6_addr, &in6addr_any, sizeof(struct in6_addr)) == 0;
  return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static bind_fn real_bind = NULL;
  if (real_bind == NULL) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
  const char *host = getenv("TFEED_BIND_HOST");
  if (host == NULL || addr == NULL || !is_wildcard(addr)) return real_bind(fd, addr, len);
  struct in_addr v4;
  struct in6_addr v6;
  if (addr->sa_family == AF_INET) {
    struct sockaddr_in in = *(const struct sockaddr_in *)addr;
    if (inet_pton(AF_INET, host, &v4) != 1) { /* an IPv6 host: no IPv4 listener at all */
      errno = EADDRNOTAVAIL;
      return -1;
    }
    in.sin_addr = v4;
    return real_bind(fd, (const struct sockaddr *)&in, sizeof in);
  }
  struct sockaddr_in6 in6 = *(const struct sockaddr_in6 *)addr;
  if (inet_pton(AF_INET6, host, &v6) == 1) {
    in6.sin6_addr = v6;
  } else if (inet_pton(AF_INET, host, &v4) == 1) { /* an IPv4 host on a dual-stack socket: its mapped form */
    memset(&in6.sin6_addr, 0, sizeof in6.sin6_addr);
    in6.sin6_addr.s6_addr[10] = in6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&in6.sin6_addr.s6_addr[12], &v4, 4);
  } else {
    errno = EADDRNOTAVAIL; /* never the wildcard: fail closed */
    return -1;
  }
  return real_bind(fd, (const struct sockaddr *)&in6, sizeof in6);
}
