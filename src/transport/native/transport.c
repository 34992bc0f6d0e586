// wasmdev transport addon: the system calls Node's standard library lacks (sendmsg/recvmsg with
// SCM_RIGHTS, socketpair, memfd, mmap, eventfd) plus a libuv poll watcher so readiness of any fd
// reaches JavaScript on the event loop. Policy (buffers, limits, errors) lives in TypeScript;
// every call here is one system call or a handful, returning a result or a negative errno.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

// Kernel cap on fds per SCM_RIGHTS message (SCM_MAX_FD), plus one to notice an excess.
#define MAX_FDS 254
#define MAX_IOV 64

// ---- argument helpers -----------------------------------------------------------------------

#define ARGS(n)                                                                  \
  size_t argc = (n);                                                             \
  napi_value argv[(n) > 0 ? (n) : 1];                                            \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL

static napi_value make_number(napi_env env, double value) {
  napi_value result;
  napi_create_double(env, value, &result);
  return result;
}

static napi_value make_int(napi_env env, int32_t value) {
  napi_value result;
  napi_create_int32(env, value, &result);
  return result;
}

static int32_t arg_int(napi_env env, napi_value value) {
  int32_t result = -1;
  napi_get_value_int32(env, value, &result);
  return result;
}

static double arg_double(napi_env env, napi_value value) {
  double result = -1;
  napi_get_value_double(env, value, &result);
  return result;
}

static int arg_bool(napi_env env, napi_value value) {
  bool result = false;
  napi_get_value_bool(env, value, &result);
  return result;
}

/** Data pointer and byte length of a TypedArray (any element type). */
static int arg_bytes(napi_env env, napi_value value, uint8_t **data, size_t *length) {
  napi_typedarray_type type;
  size_t count;
  void *ptr;
  if (napi_get_typedarray_info(env, value, &type, &count, &ptr, NULL, NULL) != napi_ok) return -1;
  size_t element = 1;
  switch (type) {
    case napi_int16_array: case napi_uint16_array: element = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: element = 4; break;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: element = 8; break;
    default: break;
  }
  *data = ptr;
  *length = count * element;
  return 0;
}

/** Reads an optional JS array of fds into `fds`; returns the count or -1 if malformed. */
static int arg_fds(napi_env env, napi_value value, int *fds) {
  napi_valuetype kind;
  napi_typeof(env, value, &kind);
  if (kind == napi_null || kind == napi_undefined) return 0;
  uint32_t count;
  if (napi_get_array_length(env, value, &count) != napi_ok || count > MAX_FDS) return -1;
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    napi_get_element(env, value, i, &element);
    fds[i] = arg_int(env, element);
  }
  return (int)count;
}

/** Fills msg_control with one SCM_RIGHTS message carrying `fds`. */
static void attach_fds(struct msghdr *msg, void *control, int *fds, int count) {
  if (count == 0) return;
  msg->msg_control = control;
  msg->msg_controllen = CMSG_SPACE(sizeof(int) * count);
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
  memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
}

typedef union {
  struct cmsghdr align;
  char bytes[CMSG_SPACE(sizeof(int) * MAX_FDS)];
} control_buffer;

// ---- sockets --------------------------------------------------------------------------------

static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) return make_int(env, -errno);
  napi_value result;
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, make_int(env, pair[0]));
  napi_set_element(env, result, 1, make_int(env, pair[1]));
  return result;
}

static int fill_address(napi_env env, napi_value value, struct sockaddr_un *address, socklen_t *length) {
  size_t size;
  memset(address, 0, sizeof *address);
  address->sun_family = AF_UNIX;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &size) != napi_ok) return -EINVAL;
  if (size == 0) return -EINVAL;
  if (size >= sizeof address->sun_path) return -ENAMETOOLONG;
  napi_get_value_string_utf8(env, value, address->sun_path, sizeof address->sun_path, &size);
  *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + size + 1);
  return 0;
}

// listen(path, backlog, mode): the socket file gets `mode` before listen(), so nobody can connect
// through looser permissions in between (connecting to a bound, non-listening socket fails).
static napi_value js_listen(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct sockaddr_un address;
  socklen_t length;
  int err = fill_address(env, argv[0], &address, &length);
  if (err < 0) return make_int(env, err);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_int(env, -errno);
  if (bind(fd, (struct sockaddr *)&address, length) < 0) {
    err = -errno;
    close(fd);
    return make_int(env, err);
  }
  if (chmod(address.sun_path, (mode_t)arg_int(env, argv[2])) < 0 || listen(fd, arg_int(env, argv[1])) < 0) {
    err = -errno;
    unlink(address.sun_path);
    close(fd);
    return make_int(env, err);
  }
  return make_int(env, fd);
}

static napi_value js_accept(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd = accept4(arg_int(env, argv[0]), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  return make_int(env, fd < 0 ? -errno : fd);
}

static napi_value js_connect(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct sockaddr_un address;
  socklen_t length;
  int err = fill_address(env, argv[0], &address, &length);
  if (err < 0) return make_int(env, err);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_int(env, -errno);
  if (connect(fd, (struct sockaddr *)&address, length) < 0) {
    err = -errno;
    close(fd);
    return make_int(env, err);
  }
  return make_int(env, fd);
}

static napi_value js_prepare_stream_socket(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd = arg_int(env, argv[0]);
  int value;
  socklen_t size = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &size) < 0) return make_int(env, -errno);
  if (value != AF_UNIX) return make_int(env, -EAFNOSUPPORT);
  size = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &size) < 0) return make_int(env, -errno);
  if (value != SOCK_STREAM) return make_int(env, -EPROTOTYPE);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return make_int(env, -errno);
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return make_int(env, -errno);
  return make_int(env, 0);
}

static napi_value js_set_non_blocking(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd = arg_int(env, argv[0]);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return make_int(env, -errno);
  return make_int(env, 0);
}

// recv(fd, bytes, offset, length, fdInfo): fdInfo[0] = fds received, fdInfo[1] = 1 if the peer
// sent more than fit (those were closed), fdInfo[2...] = the fds (close-on-exec).
static napi_value js_recv(napi_env env, napi_callback_info info) {
  ARGS(5);
  int fd = arg_int(env, argv[0]);
  uint8_t *data, *fd_data;
  size_t size, fd_size;
  if (arg_bytes(env, argv[1], &data, &size) < 0 || arg_bytes(env, argv[4], &fd_data, &fd_size) < 0) {
    return make_int(env, -EINVAL);
  }
  double offset = arg_double(env, argv[2]), length = arg_double(env, argv[3]);
  if (!(offset >= 0 && length > 0 && offset + length <= (double)size) || fd_size < 3 * sizeof(int32_t)) {
    return make_int(env, -EINVAL);
  }
  int32_t *fd_info = (int32_t *)fd_data;
  size_t capacity = fd_size / sizeof(int32_t) - 2;
  if (capacity > MAX_FDS) capacity = MAX_FDS;
  fd_info[0] = 0;
  fd_info[1] = 0;

  control_buffer control;
  struct iovec iov = {data + (size_t)offset, (size_t)length};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.bytes;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * capacity);
  ssize_t got = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (got < 0) return make_int(env, -errno);

  size_t count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *fds = (int *)CMSG_DATA(c);
    for (size_t i = 0; i < n; i++) {
      int received;
      memcpy(&received, fds + i, sizeof received);
      if (count < capacity) {
        fd_info[2 + count++] = received;
      } else {
        // CMSG_SPACE rounding can fit one more fd than asked for: never hand out more than fit.
        close(received);
        fd_info[1] = 1;
      }
    }
  }
  fd_info[0] = (int32_t)count;
  if (msg.msg_flags & MSG_CTRUNC) fd_info[1] = 1;
  return make_number(env, (double)got);
}

static napi_value js_send(napi_env env, napi_callback_info info) {
  ARGS(5);
  int fd = arg_int(env, argv[0]);
  uint8_t *data;
  size_t size;
  if (arg_bytes(env, argv[1], &data, &size) < 0) return make_int(env, -EINVAL);
  double offset = arg_double(env, argv[2]), length = arg_double(env, argv[3]);
  if (!(offset >= 0 && length >= 0 && offset + length <= (double)size)) return make_int(env, -EINVAL);
  int fds[MAX_FDS];
  int count = arg_fds(env, argv[4], fds);
  if (count < 0) return make_int(env, -EINVAL);

  control_buffer control;
  struct iovec iov = {data + (size_t)offset, (size_t)length};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  attach_fds(&msg, control.bytes, fds, count);
  ssize_t sent = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  return make_number(env, sent < 0 ? -errno : (double)sent);
}

static napi_value js_sendv(napi_env env, napi_callback_info info) {
  ARGS(3);
  int fd = arg_int(env, argv[0]);
  uint32_t chunks;
  if (napi_get_array_length(env, argv[1], &chunks) != napi_ok || chunks == 0 || chunks > MAX_IOV) {
    return make_int(env, -EINVAL);
  }
  struct iovec iov[MAX_IOV];
  for (uint32_t i = 0; i < chunks; i++) {
    napi_value element;
    uint8_t *data;
    size_t size;
    napi_get_element(env, argv[1], i, &element);
    if (arg_bytes(env, element, &data, &size) < 0) return make_int(env, -EINVAL);
    iov[i].iov_base = data;
    iov[i].iov_len = size;
  }
  int fds[MAX_FDS];
  int count = arg_fds(env, argv[2], fds);
  if (count < 0) return make_int(env, -EINVAL);

  control_buffer control;
  struct msghdr msg = {0};
  msg.msg_iov = iov;
  msg.msg_iovlen = chunks;
  attach_fds(&msg, control.bytes, fds, count);
  ssize_t sent = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  return make_number(env, sent < 0 ? -errno : (double)sent);
}

static napi_value js_shutdown_write(napi_env env, napi_callback_info info) {
  ARGS(1);
  return make_int(env, shutdown(arg_int(env, argv[0]), SHUT_WR) < 0 ? -errno : 0);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  // Linux releases the fd even when close() reports EINTR: never retry.
  return make_int(env, close(arg_int(env, argv[0])) < 0 ? -errno : 0);
}

static napi_value js_dup(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd = fcntl(arg_int(env, argv[0]), F_DUPFD_CLOEXEC, 3);
  return make_int(env, fd < 0 ? -errno : fd);
}

// ---- readiness: one uv_poll watcher per fd ------------------------------------------------

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int closing;
} watcher;

static void on_poll(uv_poll_t *handle, int status, int events) {
  watcher *w = handle->data;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value callback, receiver, argument;
  napi_get_reference_value(env, w->callback, &callback);
  napi_get_global(env, &receiver);
  argument = make_int(env, status < 0 ? status : events);
  // make_callback (not call_function) so promise jobs and nextTick queued by the callback run
  // before control returns to libuv, as for Node's own sockets.
  napi_status result = napi_make_callback(env, w->context, receiver, callback, 1, &argument, NULL);
  if (result == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error);
  }
  napi_close_handle_scope(env, scope);
}

static void on_closed(uv_handle_t *handle) {
  free(handle->data);
}

static napi_value js_poll_start(napi_env env, napi_callback_info info) {
  ARGS(3);
  int fd = arg_int(env, argv[0]);
  int events = arg_int(env, argv[1]);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  watcher *w = calloc(1, sizeof *w);
  if (w == NULL) return make_int(env, -ENOMEM);
  int err = uv_poll_init(loop, &w->handle, fd);
  if (err < 0) {
    free(w);
    return make_int(env, err);
  }
  w->handle.data = w;
  w->env = env;
  napi_create_reference(env, argv[2], 1, &w->callback);
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "wasmdev:poll", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &w->context);
  if (events != 0) {
    err = uv_poll_start(&w->handle, events, on_poll);
    if (err < 0) {
      napi_delete_reference(env, w->callback);
      napi_async_destroy(env, w->context);
      uv_close((uv_handle_t *)&w->handle, on_closed);
      return make_int(env, err);
    }
  }
  napi_value result;
  napi_create_external(env, w, NULL, NULL, &result);
  return result;
}

static watcher *arg_watcher(napi_env env, napi_value value) {
  void *w = NULL;
  if (napi_get_value_external(env, value, &w) != napi_ok) return NULL;
  return w;
}

static napi_value js_poll_set(napi_env env, napi_callback_info info) {
  ARGS(2);
  watcher *w = arg_watcher(env, argv[0]);
  if (w == NULL || w->closing) return make_int(env, -EBADF);
  int events = arg_int(env, argv[1]);
  int err = events == 0 ? uv_poll_stop(&w->handle) : uv_poll_start(&w->handle, events, on_poll);
  return make_int(env, err);
}

// Stops watching; the watcher's memory goes when libuv has closed the handle. The fd stays open.
static napi_value js_poll_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  watcher *w = arg_watcher(env, argv[0]);
  if (w == NULL || w->closing) return NULL;
  w->closing = 1;
  uv_poll_stop(&w->handle);
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->context);
  uv_close((uv_handle_t *)&w->handle, on_closed);
  return NULL;
}

// ---- shared memory ------------------------------------------------------------------------

static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[250];
  size_t length;
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &length);
  double size = arg_double(env, argv[1]);
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return make_int(env, -errno);
  if (ftruncate(fd, (off_t)size) < 0) {
    int err = -errno;
    close(fd);
    return make_int(env, err);
  }
  return make_int(env, fd);
}

static napi_value js_fstat_size(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct stat st;
  if (fstat(arg_int(env, argv[0]), &st) < 0) return make_int(env, -errno);
  return make_number(env, (double)st.st_size);
}

// Live mappings, so munmap() can find the one behind an ArrayBuffer. Touched only on the JS
// thread (Node runs external-buffer finalizers there).
typedef struct mapping {
  struct mapping *next;
  void *base;
  size_t length;
  void *data;
  int unmapped;
} mapping;

static mapping *mappings = NULL;

static void forget_mapping(mapping *m) {
  for (mapping **at = &mappings; *at != NULL; at = &(*at)->next) {
    if (*at == m) {
      *at = m->next;
      return;
    }
  }
}

static void finalize_mapping(napi_env env, void *data, void *hint) {
  mapping *m = hint;
  if (!m->unmapped) munmap(m->base, m->length);
  forget_mapping(m);
  free(m);
}

// mmap(fd, offset, length, writable): any offset; the mapping starts at the page below it and
// the ArrayBuffer starts at the requested byte.
static napi_value js_mmap(napi_env env, napi_callback_info info) {
  ARGS(4);
  int fd = arg_int(env, argv[0]);
  double offset = arg_double(env, argv[1]), length = arg_double(env, argv[2]);
  int writable = arg_bool(env, argv[3]);
  if (!(offset >= 0 && length > 0)) return make_int(env, -EINVAL);
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  uint64_t start = (uint64_t)offset, aligned = start & ~(page - 1), delta = start - aligned;
  size_t map_length = (size_t)(delta + (uint64_t)length);
  void *base = mmap(NULL, map_length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, (off_t)aligned);
  if (base == MAP_FAILED) return make_int(env, -errno);
  mapping *m = calloc(1, sizeof *m);
  if (m == NULL) {
    munmap(base, map_length);
    return make_int(env, -ENOMEM);
  }
  m->base = base;
  m->length = map_length;
  m->data = (uint8_t *)base + delta;
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, m->data, (size_t)length, finalize_mapping, m, &buffer) != napi_ok) {
    munmap(base, map_length);
    free(m);
    return make_int(env, -ENOMEM);
  }
  m->next = mappings;
  mappings = m;
  return buffer;
}

static napi_value js_munmap(napi_env env, napi_callback_info info) {
  ARGS(1);
  void *data;
  size_t length;
  if (napi_get_arraybuffer_info(env, argv[0], &data, &length) != napi_ok) return make_int(env, -EINVAL);
  mapping *m = mappings;
  while (m != NULL && (m->data != data || m->unmapped)) m = m->next;
  if (m == NULL) return make_int(env, -EINVAL);
  // Detach first so no JS view can reach the pages once they are gone.
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) return make_int(env, -EBUSY);
  m->unmapped = 1;
  forget_mapping(m);
  m->next = NULL;
  return make_int(env, munmap(m->base, m->length) < 0 ? -errno : 0);
}

// ---- eventfd --------------------------------------------------------------------------------

static napi_value js_eventfd(napi_env env, napi_callback_info info) {
  ARGS(2);
  int flags = EFD_CLOEXEC | EFD_NONBLOCK | (arg_bool(env, argv[1]) ? EFD_SEMAPHORE : 0);
  int fd = eventfd((unsigned int)arg_double(env, argv[0]), flags);
  return make_int(env, fd < 0 ? -errno : fd);
}

static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint64_t value = (uint64_t)arg_double(env, argv[1]);
  ssize_t r = write(arg_int(env, argv[0]), &value, sizeof value);
  return make_int(env, r < 0 ? -errno : 0);
}

static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
  ARGS(1);
  uint64_t value;
  ssize_t r = read(arg_int(env, argv[0]), &value, sizeof value);
  if (r < 0) return make_int(env, -errno);
  if (r != sizeof value) return make_int(env, -EIO);
  return make_number(env, (double)value);
}

// ---- module ---------------------------------------------------------------------------------

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback fn;
  } functions[] = {
      {"socketpair", js_socketpair},
      {"listen", js_listen},
      {"accept", js_accept},
      {"connect", js_connect},
      {"prepareStreamSocket", js_prepare_stream_socket},
      {"setNonBlocking", js_set_non_blocking},
      {"recv", js_recv},
      {"send", js_send},
      {"sendv", js_sendv},
      {"shutdownWrite", js_shutdown_write},
      {"close", js_close},
      {"dup", js_dup},
      {"pollStart", js_poll_start},
      {"pollSet", js_poll_set},
      {"pollClose", js_poll_close},
      {"memfdCreate", js_memfd_create},
      {"fstatSize", js_fstat_size},
      {"mmap", js_mmap},
      {"munmap", js_munmap},
      {"eventfd", js_eventfd},
      {"eventfdWrite", js_eventfd_write},
      {"eventfdRead", js_eventfd_read},
  };
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &fn);
    napi_set_named_property(env, exports, functions[i].name, fn);
  }
  return exports;
}
