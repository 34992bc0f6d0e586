// Bare AF_UNIX ping-pong responder for the vfio-user benchmark: the floor any server on this
// machine can reach. It frames the stream by the 16-byte vfio-user header (size at +4) and
// answers each message with a reply of the length named in the request's error field (+12),
// or nothing when that field is 0. Replies are zero bytes behind a header carrying the size,
// and every reply a read completes leaves in one send. No protocol work at all.
//
// usage: echo-server SOCKET   (prints "ready" once listening; serves connections one at a
// time until SIGTERM; fds that arrive are closed)
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RX_SIZE (4 << 20)
#define TX_SIZE (4 << 20)
#define MAX_REPLY (2 << 20)

static uint8_t rx[RX_SIZE];
static uint8_t tx[TX_SIZE];

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int send_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void serve(int fd) {
  size_t have = 0;
  for (;;) {
    union {
      struct cmsghdr align;
      char bytes[CMSG_SPACE(sizeof(int) * 64)];
    } control;
    struct iovec iov = {rx + have, RX_SIZE - have};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof control.bytes};
    ssize_t got = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      int *fds = (int *)CMSG_DATA(c);
      for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) close(fds[i]);
    }
    have += (size_t)got;
    size_t p = 0, out = 0;
    while (have - p >= 16) {
      uint32_t size, reply;
      memcpy(&size, rx + p + 4, 4);
      memcpy(&reply, rx + p + 12, 4);
      if (size < 16 || size > RX_SIZE || reply > MAX_REPLY) {
        fprintf(stderr, "echo-server: bad header (size %u, reply %u)\n", size, reply);
        return;
      }
      if (have - p < size) break;
      if (reply) {
        if (out + reply > TX_SIZE) {
          if (send_all(fd, tx, out) < 0) return;
          out = 0;
        }
        memset(tx + out, 0, 16);
        memcpy(tx + out + 4, &reply, 4);
        out += reply;
      }
      p += size;
    }
    if (out && send_all(fd, tx, out) < 0) return;
    memmove(rx, rx + p, have - p);
    have -= p;
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: echo-server SOCKET\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) die("socket");
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof a.sun_path) die("socket path too long");
  strcpy(a.sun_path, argv[1]);
  unlink(argv[1]);
  if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(l, 4) < 0) die("listen");
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    serve(c);
    close(c);
  }
}
