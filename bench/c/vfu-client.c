// Independent vfio-user client for the benchmark, written from the spec (QEMU
// docs/interop/vfio-user.rst), sharing no code with the server it measures. It runs every
// figure twice, interleaved round by round: against a vfio-user server, and the same bytes
// against the bare echo-server (same request and reply sizes, no protocol work), so each
// figure has its C floor from the same run.
//
// usage: vfu-client VFIO_SOCKET ECHO_SOCKET [FIGURE...]   (prints one JSON object on stdout with
// every figure, or the named ones: read4 write4 read4k dma posted pipelined)
//
// Against the server it negotiates VERSION (JSON capabilities, NUL-terminated), checks
// DEVICE_GET_INFO and DEVICE_GET_REGION_INFO of BAR0 (RAM-backed data, >= 8 KiB) and BAR2
// (registers of the throughput device: DOORBELL at 0x04, DOORBELL_COUNT at 0x08), then:
//   read4      4-byte REGION_READ of BAR0, one at a time            latency (us)
//   write4     4-byte REGION_WRITE of BAR0, waiting for the reply   latency (us)
//   read4k     4 KiB REGION_READ of BAR0, one at a time             latency (us)
//   dma_map    DMA_MAP of a 1 MiB memfd (fd by SCM_RIGHTS)          latency (us)
//   dma_unmap  DMA_UNMAP of that range                              latency (us)
//   posted     NO_REPLY 4-byte doorbell writes in batches of 1024, then one read that
//              flushes them; the read returns DOORBELL_COUNT, checked  writes/s
//   pipelined  4-byte REGION_READs with 16 in flight                reads/s
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum {
  VERSION = 1, DMA_MAP = 2, DMA_UNMAP = 3, DEVICE_GET_INFO = 4, DEVICE_GET_REGION_INFO = 5,
  REGION_READ = 9, REGION_WRITE = 10,
};
#define TYPE_REPLY 1u
#define NO_REPLY 0x10u
#define ERROR_FLAG 0x20u
#define HDR 16

#define DATA_BAR 0
#define REG_BAR 2
#define DOORBELL 0x04
#define DOORBELL_COUNT 0x08
#define DMA_IOVA 0x100000000ull
#define DMA_SIZE (1u << 20)

#define LAT_N 20000
#define DMA_N 4000
#define ROUNDS 4
#define POSTED_N 400000
#define POSTED_BATCH 1024
#define PIPE_N 200000
#define PIPE_DEPTH 16

#define RX_SIZE (2 << 20)

typedef struct {
  int fd;
  int bare;  // 1: the echo server (reply length in the error field), 0: vfio-user
  uint16_t next_id;
  uint8_t rx[RX_SIZE];
  size_t start, end;
  uint8_t tx[64 * 1024];
} conn;

static void die(const char *fmt, const char *arg) {
  fprintf(stderr, "vfu-client: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  exit(1);
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static conn *open_conn(const char *path, int bare) {
  conn *c = calloc(1, sizeof *c);
  if (!c) die("out of memory%s", "");
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof a.sun_path) die("path too long: %s", path);
  strcpy(a.sun_path, path);
  if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) die("cannot connect to %s", path);
  c->bare = bare;
  return c;
}

static void send_all(conn *c, const void *data, size_t n, int fd) {
  const uint8_t *p = data;
  while (n > 0) {
    union {
      struct cmsghdr align;
      char bytes[CMSG_SPACE(sizeof(int))];
    } control;
    struct iovec iov = {(void *)p, n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
      msg.msg_control = control.bytes;
      msg.msg_controllen = sizeof control.bytes;
      struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    }
    ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("sendmsg: %s", strerror(errno));
    }
    fd = -1;  // the fd went with the first byte
    p += w;
    n -= (size_t)w;
  }
}

/** The next complete message (header at the returned pointer), reading as needed. */
static uint8_t *next_msg(conn *c) {
  for (;;) {
    size_t have = c->end - c->start;
    if (have >= HDR) {
      uint32_t size;
      memcpy(&size, c->rx + c->start + 4, 4);
      if (size < HDR || size > RX_SIZE) die("reply with a bad size field%s", "");
      if (have >= size) {
        uint8_t *m = c->rx + c->start;
        c->start += size;
        return m;
      }
    }
    if (c->start > 0 && c->end + 65536 > RX_SIZE) {
      memmove(c->rx, c->rx + c->start, have);
      c->start = 0;
      c->end = have;
    }
    union {
      struct cmsghdr align;
      char bytes[CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct iovec iov = {c->rx + c->end, RX_SIZE - c->end};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof control.bytes};
    ssize_t got = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) die("recvmsg: %s", strerror(errno));
    if (got == 0) die("the server closed the connection%s", "");
    // Fds the server sends (a mappable region's fd) are not used here.
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      int *fds = (int *)CMSG_DATA(cm);
      for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) close(fds[i]);
    }
    c->end += (size_t)got;
  }
}

static uint32_t u32at(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/** Reads one reply and checks it answers `cmd` with id `id` without error; returns it. */
static uint8_t *expect_reply(conn *c, uint16_t id, uint16_t cmd) {
  uint8_t *m = next_msg(c);
  if (c->bare) return m;
  uint16_t rid, rcmd;
  memcpy(&rid, m, 2);
  memcpy(&rcmd, m + 2, 2);
  uint32_t flags = u32at(m + 8);
  if ((flags & 0xf) != TYPE_REPLY || rid != id || rcmd != cmd) die("unexpected message in place of a reply%s", "");
  if (flags & ERROR_FLAG) {
    static char why[64];
    snprintf(why, sizeof why, "command %u failed with errno %u", cmd, u32at(m + 12));
    die("%s", why);
  }
  return m;
}

/**
 * Appends one message at `out`: a vfio-user header, or for the echo server the same bytes with
 * the reply length it should send in the error field (0 when none is wanted).
 */
static size_t put_header(conn *c, uint8_t *out, uint16_t cmd, uint32_t size, int no_reply, uint32_t reply_size) {
  uint16_t id = c->next_id++;
  uint32_t flags = no_reply ? NO_REPLY : 0, err = c->bare && !no_reply ? reply_size : 0;
  memcpy(out, &id, 2);
  memcpy(out + 2, &cmd, 2);
  memcpy(out + 4, &size, 4);
  memcpy(out + 8, &flags, 4);
  memcpy(out + 12, &err, 4);
  return HDR;
}

/** REGION_READ / REGION_WRITE request: offset u64, region u32, count u32, data (write). */
static size_t put_access(conn *c, uint8_t *out, uint16_t cmd, uint32_t region, uint64_t offset, uint32_t count, const void *data, int no_reply) {
  uint32_t data_len = cmd == REGION_WRITE ? count : 0;
  uint32_t reply = HDR + 16 + (cmd == REGION_READ ? count : 0);
  size_t n = put_header(c, out, cmd, HDR + 16 + data_len, no_reply, reply);
  memcpy(out + n, &offset, 8);
  memcpy(out + n + 8, &region, 4);
  memcpy(out + n + 12, &count, 4);
  if (data_len) memcpy(out + n + 16, data, data_len);
  return n + 16 + data_len;
}

/** One request, one reply; returns the reply. */
static uint8_t *call(conn *c, const uint8_t *req, size_t n, int fd) {
  uint16_t id, cmd;
  memcpy(&id, req, 2);
  memcpy(&cmd, req + 2, 2);
  send_all(c, req, n, fd);
  return expect_reply(c, id, cmd);
}

static void negotiate(conn *c) {
  const char *json = "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576}}";
  uint8_t req[256];
  size_t jl = strlen(json) + 1;  // the spec's version data is a NUL-terminated JSON string
  size_t n = put_header(c, req, VERSION, (uint32_t)(HDR + 4 + jl), 0, 0);
  uint16_t major = 0, minor = 1;
  memcpy(req + n, &major, 2);
  memcpy(req + n + 2, &minor, 2);
  memcpy(req + n + 4, json, jl);
  uint8_t *r = call(c, req, n + 4 + jl, -1);
  uint16_t rmajor;
  memcpy(&rmajor, r + HDR, 2);
  if (u32at(r + 4) < HDR + 5 || rmajor != 0) die("the server answered VERSION with an unusable version%s", "");

  // DEVICE_GET_INFO: argsz, flags, num_regions, num_irqs.
  uint32_t info[4] = {16, 0, 0, 0};
  n = put_header(c, req, DEVICE_GET_INFO, HDR + 16, 0, 0);
  memcpy(req + n, info, 16);
  r = call(c, req, n + 16, -1);
  if (u32at(r + 4) < HDR + 16 || u32at(r + HDR + 8) <= REG_BAR) die("DEVICE_GET_INFO reports too few regions%s", "");

  // DEVICE_GET_REGION_INFO: argsz, flags, index, cap_offset, size u64, offset u64.
  for (uint32_t index = 0; index <= REG_BAR; index += REG_BAR) {
    uint8_t body[32] = {0};
    uint32_t argsz = 32;
    memcpy(body, &argsz, 4);
    memcpy(body + 8, &index, 4);
    n = put_header(c, req, DEVICE_GET_REGION_INFO, HDR + 32, 0, 0);
    memcpy(req + n, body, 32);
    r = call(c, req, n + 32, -1);
    uint64_t size;
    memcpy(&size, r + HDR + 16, 8);
    uint32_t flags = u32at(r + HDR + 4);
    if (u32at(r + 4) < HDR + 32 || (flags & 3) != 3 || size < (index == DATA_BAR ? 8192u : 0x24u)) die("region info of BAR %s is not the throughput device's", index ? "2" : "0");
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  double median, p99;
} stats;

static stats summarize(double *s, size_t n) {
  qsort(s, n, sizeof *s, cmp_double);
  size_t p = (size_t)(0.99 * (double)n);
  return (stats){s[n / 2], s[p < n ? p : n - 1]};
}

/** `n` round trips of `req` (its id renewed each time); appends per-trip us to `out`. */
static void ping_pong(conn *c, uint8_t *req, size_t len, int fd, size_t n, double *out) {
  for (size_t i = 0; i < n; i++) {
    uint16_t id = c->next_id++;
    memcpy(req, &id, 2);
    double t0 = now_us();
    call(c, req, len, fd);
    out[i] = now_us() - t0;
  }
}

typedef size_t (*make_fn)(conn *c, uint8_t *out);

static size_t make_read4(conn *c, uint8_t *out) { return put_access(c, out, REGION_READ, DATA_BAR, 0x100, 4, NULL, 0); }
static size_t make_write4(conn *c, uint8_t *out) {
  static const uint8_t data[4] = {1, 2, 3, 4};
  return put_access(c, out, REGION_WRITE, DATA_BAR, 0x100, 4, data, 0);
}
static size_t make_read4k(conn *c, uint8_t *out) { return put_access(c, out, REGION_READ, DATA_BAR, 0, 4096, NULL, 0); }

static size_t make_dma_map(conn *c, uint8_t *out) {
  // argsz, flags (READ | WRITE), offset u64, address u64, size u64.
  uint32_t head[2] = {32, 3};
  uint64_t tail[3] = {0, DMA_IOVA, DMA_SIZE};
  size_t n = put_header(c, out, DMA_MAP, HDR + 32, 0, HDR);
  memcpy(out + n, head, 8);
  memcpy(out + n + 8, tail, 24);
  return n + 32;
}

static size_t make_dma_unmap(conn *c, uint8_t *out) {
  // argsz, flags, address u64, size u64; the reply repeats them.
  uint32_t head[2] = {24, 0};
  uint64_t tail[2] = {DMA_IOVA, DMA_SIZE};
  size_t n = put_header(c, out, DMA_UNMAP, HDR + 24, 0, HDR + 24);
  memcpy(out + n, head, 8);
  memcpy(out + n + 8, tail, 16);
  return n + 24;
}

/** Latency of `make`'s request on both connections, interleaved in ROUNDS rounds. */
static void latency(conn *v, conn *b, make_fn make, size_t n, stats *sv, stats *sb) {
  double *xv = malloc(n * sizeof(double)), *xb = malloc(n * sizeof(double));
  uint8_t rv[8192], rb[8192];
  size_t lv = make(v, rv), lb = make(b, rb);
  ping_pong(v, rv, lv, -1, n / 4, xv);  // warm-up
  ping_pong(b, rb, lb, -1, n / 4, xb);
  for (int r = 0; r < ROUNDS; r++) {
    ping_pong(v, rv, lv, -1, n / ROUNDS, xv + r * (n / ROUNDS));
    ping_pong(b, rb, lb, -1, n / ROUNDS, xb + r * (n / ROUNDS));
  }
  *sv = summarize(xv, n);
  *sb = summarize(xb, n);
  free(xv);
  free(xb);
}

/** DMA_MAP then DMA_UNMAP of the memfd, `n` times, timed separately. */
static void dma_round(conn *c, int memfd, size_t n, double *map, double *unmap) {
  uint8_t m[64], u[64];
  size_t lm = make_dma_map(c, m), lu = make_dma_unmap(c, u);
  for (size_t i = 0; i < n; i++) {
    ping_pong(c, m, lm, c->bare ? -1 : memfd, 1, map + i);
    ping_pong(c, u, lu, -1, 1, unmap + i);
  }
}

static void dma(conn *v, conn *b, stats out[4]) {
  int memfd = memfd_create("vfu-bench-dma", MFD_CLOEXEC);
  if (memfd < 0 || ftruncate(memfd, DMA_SIZE) < 0) die("memfd: %s", strerror(errno));
  size_t n = DMA_N;
  double *x[4];
  for (int i = 0; i < 4; i++) x[i] = malloc(n * sizeof(double));
  dma_round(v, memfd, n / 4, x[0], x[1]);  // warm-up
  dma_round(b, memfd, n / 4, x[2], x[3]);
  for (int r = 0; r < ROUNDS; r++) {
    size_t at = r * (n / ROUNDS);
    dma_round(v, memfd, n / ROUNDS, x[0] + at, x[1] + at);
    dma_round(b, memfd, n / ROUNDS, x[2] + at, x[3] + at);
  }
  for (int i = 0; i < 4; i++) {
    out[i] = summarize(x[i], n);
    free(x[i]);
  }
  close(memfd);
}

/** Posted doorbell writes, then a flushing read of DOORBELL_COUNT; returns writes/s. */
static double posted(conn *c, size_t count) {
  static uint8_t batch[POSTED_BATCH * 36];
  static const uint8_t value[4] = {7, 0, 0, 0};
  uint8_t req[64], *r;
  uint32_t before = 0;
  if (!c->bare) {
    size_t n = put_access(c, req, REGION_READ, REG_BAR, DOORBELL_COUNT, 4, NULL, 0);
    before = u32at(call(c, req, n, -1) + HDR + 16);
  }
  double t0 = now_us();
  for (size_t i = 0; i < count;) {
    size_t len = 0;
    for (size_t k = 0; k < POSTED_BATCH && i < count; k++, i++) len += put_access(c, batch + len, REGION_WRITE, REG_BAR, DOORBELL, 4, value, 1);
    send_all(c, batch, len, -1);
  }
  size_t n = put_access(c, req, REGION_READ, REG_BAR, DOORBELL_COUNT, 4, NULL, 0);
  r = call(c, req, n, -1);
  double elapsed = now_us() - t0;
  if (!c->bare && u32at(r + HDR + 16) - before != count) die("the device did not count every posted write%s", "");
  return (double)count / (elapsed / 1e6);
}

/** `total` 4-byte reads with PIPE_DEPTH in flight; returns reads/s. */
static double pipelined(conn *c, size_t total) {
  uint8_t out[PIPE_DEPTH * 32];
  size_t sent = 0, done = 0;
  double t0 = now_us();
  while (done < total) {
    size_t len = 0;
    while (sent < total && sent - done < PIPE_DEPTH) {
      len += make_read4(c, out + len);
      sent++;
    }
    if (len) send_all(c, out, len, -1);
    // Take every reply already here (at least one), then refill the window.
    do {
      uint8_t *m = next_msg(c);
      if (!c->bare && (u32at(m + 8) & ERROR_FLAG)) die("a pipelined read failed%s", "");
      done++;
    } while (done < total && c->end - c->start >= HDR && c->end - c->start >= u32at(c->rx + c->start + 4));
  }
  return (double)total / ((now_us() - t0) / 1e6);
}

static void best_rate(conn *v, conn *b, double (*fn)(conn *, size_t), size_t n, double *bv, double *bb) {
  fn(v, n / 8);
  fn(b, n / 8);
  *bv = *bb = 0;
  for (int r = 0; r < 3; r++) {
    double x = fn(v, n), y = fn(b, n);
    if (x > *bv) *bv = x;
    if (y > *bb) *bb = y;
  }
}

static int wanted(int argc, char **argv, const char *name) {
  if (argc == 3) return 1;
  for (int i = 3; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

static void print_stats(const char *name, stats v, stats b, const char **sep) {
  printf("%s  \"%s\": {\"server\": {\"median\": %.4f, \"p99\": %.4f}, \"bare\": {\"median\": %.4f, \"p99\": %.4f}}", *sep, name, v.median, v.p99,
         b.median, b.p99);
  *sep = ",\n";
}

static void print_rate(const char *name, double v, double b, const char **sep) {
  printf("%s  \"%s\": {\"server\": %.1f, \"bare\": %.1f}", *sep, name, v, b);
  *sep = ",\n";
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: vfu-client VFIO_SOCKET ECHO_SOCKET [FIGURE...]\n");
    return 2;
  }
  conn *v = open_conn(argv[1], 0), *b = open_conn(argv[2], 1);
  negotiate(v);
  const char *sep = "{\n";
  stats sv, sb, d[4];
  double rv, rb;
  if (wanted(argc, argv, "read4")) {
    latency(v, b, make_read4, LAT_N, &sv, &sb);
    print_stats("read4", sv, sb, &sep);
  }
  if (wanted(argc, argv, "write4")) {
    latency(v, b, make_write4, LAT_N, &sv, &sb);
    print_stats("write4", sv, sb, &sep);
  }
  if (wanted(argc, argv, "read4k")) {
    latency(v, b, make_read4k, LAT_N, &sv, &sb);
    print_stats("read4k", sv, sb, &sep);
  }
  if (wanted(argc, argv, "dma")) {
    dma(v, b, d);
    print_stats("dma_map", d[0], d[2], &sep);
    print_stats("dma_unmap", d[1], d[3], &sep);
  }
  if (wanted(argc, argv, "posted")) {
    best_rate(v, b, posted, POSTED_N, &rv, &rb);
    print_rate("posted", rv, rb, &sep);
  }
  if (wanted(argc, argv, "pipelined")) {
    best_rate(v, b, pipelined, PIPE_N, &rv, &rb);
    print_rate("pipelined", rv, rb, &sep);
  }
  printf("\n}\n");
  return 0;
}
