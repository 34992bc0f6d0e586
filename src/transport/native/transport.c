// wasmdev transport addon: the system calls Node's standard library lacks (sendmsg/recvmsg with
// SCM_RIGHTS, socketpair, memfd, mmap, eventfd) plus a libuv poll watcher so readiness of any fd
// reaches JavaScript on the event loop. Policy (buffers, limits, errors) lives in TypeScript;
// every call here is one system call or a handful, returning a result or a negative errno.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
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
  // The kernel stops at the first NUL: "/a\0b" would bind or reach "/a" (and "\0..." the
  // abstract namespace). Refuse instead of silently using another address.
  if (strlen(address->sun_path) != size) return -EINVAL;
  *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + size + 1);
  return 0;
}

// listen(path, backlog, mode): the socket file is created by bind() with `mode` already, so it is
// never visible with looser permissions, and nothing is ever chmod'ed through the path (chmod
// follows symlinks: a path swapped after bind would hand the mode to another file). bind() makes
// the file with 0777 & ~umask, so the umask is set to ~mode around that one call and restored at
// once. The umask is process-wide: a file another thread creates during that bind() gets the
// same mask (never a looser one than our socket's). bind() itself never follows a symlink at the
// path: anything already there (symlink, regular file, stale socket) fails with EADDRINUSE.
static napi_value js_listen(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct sockaddr_un address;
  socklen_t length;
  int32_t backlog = arg_int(env, argv[1]), mode = arg_int(env, argv[2]);
  // A bad mode must not reach umask(): ~(-1) would create the socket open to everyone.
  if (backlog < 0 || mode < 0 || mode > 0777) return make_int(env, -EINVAL);
  int err = fill_address(env, argv[0], &address, &length);
  if (err < 0) return make_int(env, err);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_int(env, -errno);
  mode_t saved_umask = umask((mode_t)(~mode & 0777));
  int bound = bind(fd, (struct sockaddr *)&address, length);
  err = -errno;
  umask(saved_umask);
  if (bound < 0) {
    close(fd);
    return make_int(env, err);
  }
  if (listen(fd, backlog) < 0) {
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

/**
 * One recvmsg into data[0, length) with fd_info as js_recv describes it (fd_info_words >= 3).
 * Returns the byte count or -errno.
 */
static ssize_t recv_into(int fd, uint8_t *data, size_t length, int32_t *fd_info, size_t fd_info_words) {
  size_t capacity = fd_info_words - 2;
  if (capacity > MAX_FDS) capacity = MAX_FDS;
  fd_info[0] = 0;
  fd_info[1] = 0;

  control_buffer control;
  struct iovec iov = {data, length};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.bytes;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * capacity);
  ssize_t got = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (got < 0) return -errno;

  size_t count = 0, delivered = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    delivered += n;
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
  if (msg.msg_flags & MSG_CTRUNC) {
    // The kernel installs as many fds as the control buffer holds (scm_detach_fds) and drops
    // the rest; fewer than that means installing one failed.
    size_t room = (CMSG_SPACE(sizeof(int) * capacity) - sizeof(struct cmsghdr)) / sizeof(int);
    if (fd_info[1] == 0) fd_info[1] = delivered < room ? 2 : 1;
  }
  return got;
}

// recv(fd, bytes, offset, length, fdInfo): fdInfo[0] = fds received, fdInfo[1] = 1 if the peer
// sent more than fit (those were closed), 2 if the kernel could not install fds that did fit
// (MSG_CTRUNC with room left: this process is out of fds, EMFILE/ENFILE), fdInfo[2...] = the
// fds (close-on-exec).
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
  ssize_t got = recv_into(fd, data + (size_t)offset, (size_t)length, (int32_t *)fd_data, fd_size / sizeof(int32_t));
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

// ---- per-environment state ------------------------------------------------------------------
//
// Node may load the addon in several environments at once (the main thread and worker threads),
// each with its own event loop and JS thread. Everything mutable lives in one env_state per
// environment and is touched only on that environment's thread; there is no process-wide state.
//
// A worker's loop must hold no open handle when the worker ends (Node aborts the whole process
// otherwise), so an async cleanup hook closes every watcher still open and lets the teardown go
// on once libuv has finished closing them.

typedef struct watcher watcher;

typedef struct {
  watcher *open;          // watchers not closed yet (doubly linked)
  size_t unfinished;      // watchers whose uv_close has not completed
  int tearing_down;
  napi_async_cleanup_hook_handle cleanup;
  size_t refs;            // 1 for the environment + 1 per watcher not yet freed
  napi_ref guard_flags;   // this environment's ArrayBuffer over guard_flags (mappingGuard)
} env_state;

static void release_state(env_state *state) {
  if (--state->refs == 0) free(state);
}

static env_state *get_state(napi_env env) {
  void *state = NULL;
  if (napi_get_instance_data(env, &state) != napi_ok) return NULL;
  return state;
}

// ---- readiness: one uv_poll watcher per fd ------------------------------------------------
//
// A watcher's memory is freed only when both libuv has closed its handle and the JS external
// naming it has been collected, so a stale handle (pollClose twice, pollSet after close) finds
// a watcher marked closed instead of freed memory.

struct watcher {
  uv_poll_t handle;
  env_state *state;
  watcher *prev, *next;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int closing;            // pollClose (or teardown) started closing it
  int uv_open;            // libuv has not finished closing the handle
  int js_alive;           // the JS external has not been finalized
  int fd;
  // Stream mode (pollSetStream): buffers the watcher reads into and sends from itself, kept
  // alive by `refs`; their pointers are stable (off-heap backing stores, never detached).
  napi_ref refs[4];
  uint8_t *in, *out;
  size_t in_size, out_size;
  int32_t *fd_info;
  size_t fd_info_words;
  int32_t *control;
};

// Stream mode control words (an Int32Array shared with JS).
enum {
  CTL_READ_OFFSET,  // JS: where in `in` the next read goes
  CTL_READ_LENGTH,  // JS: how much it may read; 0 = the watcher does not read (JS does)
  CTL_READ_RESULT,  // watcher: bytes read or -errno, when it calls back with POLL_RECEIVED
  CTL_SEND_LENGTH,  // JS: bytes at the start of `out` to send once the callback returns
  CTL_SEND_RESULT,  // watcher: bytes sent or -errno, when it calls back with POLL_SENT
  CTL_WORDS = 8,
};
// Callback event bits beyond UV_READABLE (1) / UV_WRITABLE (2).
#define POLL_RECEIVED 4
#define POLL_SENT 8

static void free_watcher_if_unused(watcher *w) {
  if (w->uv_open || w->js_alive) return;
  env_state *state = w->state;
  free(w);
  release_state(state);
}

static void call_js(watcher *w, int events) {
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, receiver, argument;
  if (napi_get_reference_value(env, w->callback, &callback) == napi_ok && callback != NULL &&
      napi_get_global(env, &receiver) == napi_ok &&
      napi_create_int32(env, events, &argument) == napi_ok) {
    // make_callback (not call_function) so promise jobs and nextTick queued by the callback run
    // before control returns to libuv, as for Node's own sockets.
    napi_status result = napi_make_callback(env, w->context, receiver, callback, 1, &argument, NULL);
    if (result == napi_pending_exception) {
      napi_value error;
      if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

/** Sends what the callback left in `out`; 1 when it sent something in full, 0 nothing, -1 short. */
static int send_after(watcher *w, int32_t *ctl) {
  if (ctl == NULL || w->closing || w->control != ctl || ctl[CTL_SEND_LENGTH] <= 0) return 0;
  size_t length = (size_t)ctl[CTL_SEND_LENGTH];
  ctl[CTL_SEND_LENGTH] = 0;
  if (length > w->out_size) length = w->out_size;
  ssize_t sent;
  do sent = send(w->fd, w->out, length, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  if (sent == (ssize_t)length) return 1;
  ctl[CTL_SEND_RESULT] = sent < 0 ? -errno : (int32_t)sent;
  call_js(w, POLL_SENT);
  return -1;
}

// In stream mode one wake-up costs one call into JS: the watcher reads first (the callback
// gets POLL_RECEIVED with the result in the control block, and a wake-up with nothing to read
// costs no call at all), and sends what the callback left in `out` after it returns (calling
// back with POLL_SENT only when the kernel did not take all of it).
static void on_poll(uv_poll_t *handle, int status, int events) {
  watcher *w = handle->data;
  if (w->closing) return;
  if (status < 0) {
    call_js(w, status);
    return;
  }
  int32_t *ctl = w->control;
  if (ctl != NULL && (events & UV_READABLE) && ctl[CTL_READ_LENGTH] > 0) {
    size_t offset = (size_t)ctl[CTL_READ_OFFSET], length = (size_t)ctl[CTL_READ_LENGTH];
    if (ctl[CTL_READ_OFFSET] >= 0 && offset + length <= w->in_size) {
      ssize_t got;
      do got = recv_into(w->fd, w->in + offset, length, w->fd_info, w->fd_info_words);
      while (got == -EINTR);
      if (got == -EAGAIN && !(events & UV_WRITABLE)) return;
      if (got != -EAGAIN) {
        ctl[CTL_READ_RESULT] = (int32_t)got;
        events |= POLL_RECEIVED;
      }
    }
  }
  call_js(w, events);
  send_after(w, ctl);
}

static void drop_stream_refs(watcher *w) {
  for (int i = 0; i < 4; i++) {
    if (w->refs[i] != NULL) napi_delete_reference(w->env, w->refs[i]);
    w->refs[i] = NULL;
  }
  w->control = NULL;
}

static void on_closed(uv_handle_t *handle) {
  watcher *w = handle->data;
  env_state *state = w->state;
  // The JS side is gone once teardown started: its references die with the environment.
  if (!state->tearing_down) {
    napi_delete_reference(w->env, w->callback);
    napi_async_destroy(w->env, w->context);
    drop_stream_refs(w);
  }
  w->uv_open = 0;
  state->unfinished--;
  int teardown_done = state->tearing_down && state->unfinished == 0;
  napi_async_cleanup_hook_handle cleanup = state->cleanup;
  free_watcher_if_unused(w);
  if (teardown_done) napi_remove_async_cleanup_hook(cleanup);
}

/** Stops and closes the handle (once); the callback reference goes when the close completes. */
static void close_watcher(watcher *w) {
  if (w->closing) return;
  w->closing = 1;
  if (w->prev != NULL) w->prev->next = w->next;
  else w->state->open = w->next;
  if (w->next != NULL) w->next->prev = w->prev;
  w->prev = w->next = NULL;
  uv_poll_stop(&w->handle);
  uv_close((uv_handle_t *)&w->handle, on_closed);
}

// Like a Node socket, an open watcher keeps watching without a JS reference to its handle (the
// callback reference keeps the callback alive); only the memory bookkeeping changes here.
static void finalize_watcher(napi_env env, void *data, void *hint) {
  watcher *w = data;
  w->js_alive = 0;
  free_watcher_if_unused(w);
}

static void on_env_teardown(napi_async_cleanup_hook_handle handle, void *data) {
  env_state *state = data;
  state->tearing_down = 1;
  while (state->open != NULL) close_watcher(state->open);
  if (state->unfinished == 0) napi_remove_async_cleanup_hook(handle);
}

static void finalize_state(napi_env env, void *data, void *hint) {
  env_state *state = data;
  if (state->guard_flags != NULL) napi_delete_reference(env, state->guard_flags);
  state->guard_flags = NULL;
  release_state(state);
}

static napi_value js_poll_start(napi_env env, napi_callback_info info) {
  ARGS(3);
  int fd = arg_int(env, argv[0]);
  int events = arg_int(env, argv[1]);
  env_state *state = get_state(env);
  uv_loop_t *loop;
  napi_valuetype kind;
  if (state == NULL || state->tearing_down || napi_get_uv_event_loop(env, &loop) != napi_ok) return make_int(env, -EINVAL);
  if (napi_typeof(env, argv[2], &kind) != napi_ok || kind != napi_function) return make_int(env, -EINVAL);
  watcher *w = calloc(1, sizeof *w);
  if (w == NULL) return make_int(env, -ENOMEM);
  int err = uv_poll_init(loop, &w->handle, fd);
  if (err < 0) {
    free(w);
    return make_int(env, err);
  }
  w->handle.data = w;
  w->fd = fd;
  w->env = env;
  w->state = state;
  w->uv_open = 1;
  w->js_alive = 1;
  state->refs++;
  state->unfinished++;
  w->next = state->open;
  if (state->open != NULL) state->open->prev = w;
  state->open = w;

  napi_value resource, name, result;
  if (napi_create_reference(env, argv[2], 1, &w->callback) != napi_ok ||
      napi_create_object(env, &resource) != napi_ok ||
      napi_create_string_utf8(env, "wasmdev:poll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &w->context) != napi_ok) {
    w->js_alive = 0;
    close_watcher(w);
    return NULL;  // the failing call left its exception pending
  }
  if (events != 0 && (err = uv_poll_start(&w->handle, events, on_poll)) < 0) {
    w->js_alive = 0;
    close_watcher(w);
    return make_int(env, err);
  }
  if (napi_create_external(env, w, finalize_watcher, NULL, &result) != napi_ok) {
    w->js_alive = 0;
    close_watcher(w);
    return NULL;
  }
  return result;
}

static watcher *arg_watcher(napi_env env, napi_value value) {
  napi_valuetype kind;
  void *w = NULL;
  if (napi_typeof(env, value, &kind) != napi_ok || kind != napi_external) return NULL;
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

// pollSetStream(handle, in, fdInfo, control, out): stream mode (see on_poll). `in` receives,
// `fdInfo` gets the fds as for recv(), `control` (Int32Array of CTL_WORDS) holds the words
// above, `out` is what CTL_SEND_LENGTH refers to. Called again when JS replaces a buffer.
static napi_value js_poll_set_stream(napi_env env, napi_callback_info info) {
  ARGS(5);
  watcher *w = arg_watcher(env, argv[0]);
  if (w == NULL || w->closing) return make_int(env, -EBADF);
  uint8_t *in, *fd_info, *control, *out;
  size_t in_size, fd_size, control_size, out_size;
  if (arg_bytes(env, argv[1], &in, &in_size) < 0 || arg_bytes(env, argv[2], &fd_info, &fd_size) < 0 ||
      arg_bytes(env, argv[3], &control, &control_size) < 0 || arg_bytes(env, argv[4], &out, &out_size) < 0 ||
      fd_size < 3 * sizeof(int32_t) || control_size < CTL_WORDS * sizeof(int32_t)) {
    return make_int(env, -EINVAL);
  }
  napi_ref refs[4];
  for (int i = 0; i < 4; i++) {
    if (napi_create_reference(env, argv[1 + i], 1, &refs[i]) != napi_ok) {
      while (i-- > 0) napi_delete_reference(env, refs[i]);
      return NULL;
    }
  }
  drop_stream_refs(w);
  memcpy(w->refs, refs, sizeof refs);
  w->in = in;
  w->in_size = in_size;
  w->fd_info = (int32_t *)fd_info;
  w->fd_info_words = fd_size / sizeof(int32_t);
  w->out = out;
  w->out_size = out_size;
  w->control = (int32_t *)control;
  return make_int(env, 0);
}

// Stops watching (at once: no callback runs after this returns, even for events libuv already
// collected); the watcher's memory goes when libuv has closed the handle and the JS handle is
// collected. The fd stays open. Closing twice, or from inside the watcher's own callback, is fine.
static napi_value js_poll_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  watcher *w = arg_watcher(env, argv[0]);
  if (w != NULL) close_watcher(w);
  return NULL;
}

// ---- shared memory ------------------------------------------------------------------------

static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[250] = "";
  size_t length;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &length) != napi_ok) return make_int(env, -EINVAL);
  double size = arg_double(env, argv[1]);
  if (!(size >= 0 && size <= (double)INT64_MAX)) return make_int(env, -EINVAL);
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

// fileIdentity(fd, out): one fstat and one fcntl(F_GETFL), for callers that recognise a file
// they already mapped (same device and inode) without mapping it again. out (Uint32Array of 8):
// [dev lo, dev hi, inode lo, inode hi, size lo, size hi, open flags, 0]. 0 or -errno.
static napi_value js_file_identity(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint8_t *data;
  size_t size;
  if (arg_bytes(env, argv[1], &data, &size) < 0 || size < 8 * sizeof(uint32_t)) return make_int(env, -EINVAL);
  int fd = arg_int(env, argv[0]);
  struct stat st;
  if (fstat(fd, &st) < 0) return make_int(env, -errno);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return make_int(env, -errno);
  uint32_t *out = (uint32_t *)data;
  uint64_t dev = (uint64_t)st.st_dev, ino = (uint64_t)st.st_ino, length = st.st_size < 0 ? 0 : (uint64_t)st.st_size;
  out[0] = (uint32_t)dev;
  out[1] = (uint32_t)(dev >> 32);
  out[2] = (uint32_t)ino;
  out[3] = (uint32_t)(ino >> 32);
  out[4] = (uint32_t)length;
  out[5] = (uint32_t)(length >> 32);
  out[6] = (uint32_t)flags;
  out[7] = 0;
  return make_int(env, 0);
}

// ---- SIGBUS guard ---------------------------------------------------------------------------
//
// A peer that shrinks a file we mapped (ftruncate of its memfd) turns every access to the pages
// past the new end into SIGBUS, which would kill the whole process. Every mapping made here is
// registered in a fixed, process-wide slot table; a SIGBUS handler (installed once per process,
// on the first mapping) looks the faulting address up there and, when it lies in one of our
// live mappings, puts a private anonymous zero page over the faulting page (mmap MAP_FIXED, so
// the access resumes: reads see zeros, writes land in the private page) and raises that slot's
// "truncated" flag. JS reads the flags through an Int32Array over `guard_flags` and turns a
// raised one into an error. Any other SIGBUS (outside our mappings, a hardware memory error,
// kill -BUS) goes to the previous handler or the default action, so real bugs still crash.
//
// The table is process-wide because signal dispositions are: the main thread and every worker
// register here, each for its own mappings. The handler runs on the thread that faulted and
// takes no locks and allocates nothing: it only reads slots (atomically) and calls mmap. A slot
// is claimed (FREE -> CLAIMED, compare-and-swap), filled, then published (LIVE, release store);
// it is retired (FREE) before its pages are unmapped. A mapping is only ever touched by the
// thread that owns its ArrayBuffer, so a slot never changes while its own thread faults in it.

#define GUARD_SLOTS 32768

enum { SLOT_FREE = 0, SLOT_CLAIMED = 1, SLOT_LIVE = 2 };

typedef struct {
  int state;              // SLOT_*, accessed atomically
  int prot;
  uintptr_t base;         // page-aligned start of the mapping
  size_t length;
} guard_slot;

static guard_slot guard_slots[GUARD_SLOTS];
// One word per slot, shared with JS (Int32Array): 1 once a page of the slot's mapping was
// replaced by zeros. Reset when the slot is claimed by a new mapping.
static int32_t guard_flags[GUARD_SLOTS];
static size_t guard_high;          // slots [0, guard_high) may be in use (only grows)
static size_t guard_hint;          // where the next claim starts looking
static uint64_t guard_recovered;   // pages replaced since the process started
static uintptr_t guard_page_size;
static struct sigaction guard_previous;
static int guard_install_error;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;

static void guard_default_action(int sig, siginfo_t *info) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, NULL);
  // A fault re-executes the access on return and dies of the default action; a signal sent
  // with kill()/raise() (si_code <= 0) does not recur, so send it again: it is blocked while
  // this handler runs and is delivered as soon as it returns.
  if (info == NULL || info->si_code <= 0) raise(sig);
}

static void guard_chain(int sig, siginfo_t *info, void *context) {
  if (guard_previous.sa_flags & SA_SIGINFO) {
    if (guard_previous.sa_sigaction != NULL) {
      guard_previous.sa_sigaction(sig, info, context);
      return;
    }
  } else if (guard_previous.sa_handler == SIG_IGN) {
    // A real fault cannot be ignored (the access would fault forever); a sent signal can.
    if (info != NULL && info->si_code <= 0) return;
  } else if (guard_previous.sa_handler != SIG_DFL) {
    guard_previous.sa_handler(sig);
    return;
  }
  guard_default_action(sig, info);
}

static void guard_on_sigbus(int sig, siginfo_t *info, void *context) {
  int saved_errno = errno;
  // BUS_ADRERR is what an access past the end of a mapped file raises; hardware errors
  // (BUS_MCEERR_*) and alignment faults are not ours to hide.
  if (info != NULL && info->si_code == BUS_ADRERR) {
    uintptr_t address = (uintptr_t)info->si_addr;
    size_t high = __atomic_load_n(&guard_high, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < high; i++) {
      guard_slot *slot = &guard_slots[i];
      if (__atomic_load_n(&slot->state, __ATOMIC_ACQUIRE) != SLOT_LIVE) continue;
      if (address - slot->base >= slot->length) continue;  // unsigned: also below base
      void *page = (void *)(address & ~(guard_page_size - 1));
      void *r = mmap(page, guard_page_size, slot->prot, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (r == MAP_FAILED) break;  // cannot repair: let it crash as it would have
      __atomic_store_n(&guard_flags[i], 1, __ATOMIC_RELEASE);
      __atomic_add_fetch(&guard_recovered, 1, __ATOMIC_RELAXED);
      errno = saved_errno;
      return;
    }
  }
  guard_chain(sig, info, context);
  errno = saved_errno;
}

static void guard_install(void) {
  guard_page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = guard_on_sigbus;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGBUS, &action, &guard_previous) < 0) guard_install_error = errno;
}

/** Claims a free slot (FREE -> CLAIMED); -1 when all GUARD_SLOTS are in use. */
static int guard_claim(void) {
  size_t start = __atomic_load_n(&guard_hint, __ATOMIC_RELAXED);
  for (size_t n = 0; n < GUARD_SLOTS; n++) {
    size_t i = (start + n) % GUARD_SLOTS;
    int expected = SLOT_FREE;
    if (!__atomic_compare_exchange_n(&guard_slots[i].state, &expected, SLOT_CLAIMED, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) continue;
    size_t high = __atomic_load_n(&guard_high, __ATOMIC_RELAXED);
    while (high < i + 1 && !__atomic_compare_exchange_n(&guard_high, &high, i + 1, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
    }
    __atomic_store_n(&guard_hint, (i + 1) % GUARD_SLOTS, __ATOMIC_RELAXED);
    return (int)i;
  }
  return -1;
}

static void guard_publish(int i, void *base, size_t length, int prot) {
  guard_slots[i].base = (uintptr_t)base;
  guard_slots[i].length = length;
  guard_slots[i].prot = prot;
  __atomic_store_n(&guard_flags[i], 0, __ATOMIC_RELAXED);
  __atomic_store_n(&guard_slots[i].state, SLOT_LIVE, __ATOMIC_RELEASE);
}

static void guard_retire(int i) {
  __atomic_store_n(&guard_slots[i].state, SLOT_FREE, __ATOMIC_RELEASE);
}

// mappingGuard(): { flags: ArrayBuffer over the per-slot flag words, slots: capacity }. One
// ArrayBuffer per environment (cached): JS keeps an Int32Array over it.
static napi_value js_mapping_guard(napi_env env, napi_callback_info info);

// mappingGuardStats(): [slots, live mappings, pages replaced by zeros since start].
static napi_value js_mapping_guard_stats(napi_env env, napi_callback_info info) {
  size_t live = 0, high = __atomic_load_n(&guard_high, __ATOMIC_ACQUIRE);
  for (size_t i = 0; i < high; i++) live += __atomic_load_n(&guard_slots[i].state, __ATOMIC_ACQUIRE) == SLOT_LIVE;
  napi_value result;
  napi_create_array_with_length(env, 3, &result);
  napi_set_element(env, result, 0, make_number(env, GUARD_SLOTS));
  napi_set_element(env, result, 1, make_number(env, (double)live));
  napi_set_element(env, result, 2, make_number(env, (double)__atomic_load_n(&guard_recovered, __ATOMIC_RELAXED)));
  return result;
}

// ---- file seals ---------------------------------------------------------------------------

static napi_value js_file_seals(napi_env env, napi_callback_info info) {
  ARGS(1);
  int seals = fcntl(arg_int(env, argv[0]), F_GET_SEALS);
  return make_int(env, seals < 0 ? -errno : seals);
}

static napi_value js_add_file_seals(napi_env env, napi_callback_info info) {
  ARGS(2);
  return make_int(env, fcntl(arg_int(env, argv[0]), F_ADD_SEALS, arg_int(env, argv[1])) < 0 ? -errno : 0);
}

/** Best effort: makes the file unshrinkable. 1 when F_SEAL_SHRINK is in place afterwards. */
static int seal_shrink(int fd) {
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) return 0;  // not a sealable file (EINVAL): regular files, hugetlbfs...
  if (seals & F_SEAL_SHRINK) return 1;
  if (seals & F_SEAL_SEAL) return 0;  // the owner forbade further seals
  return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0;  // EPERM when not opened for writing
}

// One mapping. The ArrayBuffer carries a pointer to it (napi_wrap) so munmap() finds it without
// any table lookup; it is freed by the ArrayBuffer's finalizer, which also unmaps if munmap()
// was never called. `slot` is its entry in the SIGBUS guard table.
typedef struct {
  void *base;
  size_t length;
  int slot;
  int unmapped;
} mapping;

static void finalize_mapping(napi_env env, void *data, void *hint) {
  mapping *m = hint;
  if (!m->unmapped) {
    guard_retire(m->slot);
    munmap(m->base, m->length);
  }
  free(m);
}

// Largest integer a double holds exactly (2^53): offsets and lengths arrive as JS numbers.
#define MAX_EXACT 9007199254740992.0

// mmap(fd, offset, length, writable, sealShrink?, info?): any offset; the mapping starts at the
// page below it and the ArrayBuffer starts at the requested byte. With sealShrink the file gets
// F_SEAL_SHRINK first when it allows it (then no peer can shrink it under the mapping). The file
// size is checked here, in exact 64-bit arithmetic right before mapping (a double sum loses the
// last bits above 2^53, and a page past the end of the file raises SIGBUS when touched): -ERANGE
// when [offset, offset+length) is not inside the file; -ENOSPC when the guard table is full.
// info (Int32Array, optional): [0] = guard slot, [1] = 1 when the file cannot shrink.
static napi_value js_mmap(napi_env env, napi_callback_info info) {
  ARGS(6);
  int fd = arg_int(env, argv[0]);
  double offset = arg_double(env, argv[1]), length = arg_double(env, argv[2]);
  int writable = arg_bool(env, argv[3]);
  int want_seal = argc > 4 && arg_bool(env, argv[4]);
  int32_t *out = NULL;
  if (argc > 5) {
    uint8_t *data;
    size_t size;
    napi_valuetype kind;
    napi_typeof(env, argv[5], &kind);
    if (kind != napi_undefined && kind != napi_null) {
      if (arg_bytes(env, argv[5], &data, &size) < 0 || size < 2 * sizeof(int32_t)) return make_int(env, -EINVAL);
      out = (int32_t *)data;
    }
  }
  if (!(offset >= 0 && offset < MAX_EXACT && length > 0 && length < MAX_EXACT)) return make_int(env, -EINVAL);
  if (offset != (double)(uint64_t)offset || length != (double)(uint64_t)length) return make_int(env, -EINVAL);
  pthread_once(&guard_once, guard_install);
  if (guard_install_error != 0) return make_int(env, -guard_install_error);
  uint64_t start = (uint64_t)offset, size = (uint64_t)length;
  // Seal before the size check, so the checked size is one the peer can no longer reduce.
  int sealed = want_seal ? seal_shrink(fd) : 0;
  struct stat st;
  if (fstat(fd, &st) < 0) return make_int(env, -errno);
  if (st.st_size < 0 || start > (uint64_t)st.st_size || size > (uint64_t)st.st_size - start) return make_int(env, -ERANGE);
  uint64_t page = guard_page_size;
  uint64_t aligned = start & ~(page - 1), delta = start - aligned;
  if (size > SIZE_MAX - delta) return make_int(env, -ENOMEM);
  size_t map_length = (size_t)(delta + size);
  mapping *m = calloc(1, sizeof *m);
  if (m == NULL) return make_int(env, -ENOMEM);
  int slot = guard_claim();
  if (slot < 0) {
    free(m);
    return make_int(env, -ENOSPC);
  }
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void *base = mmap(NULL, map_length, prot, MAP_SHARED, fd, (off_t)aligned);
  if (base == MAP_FAILED) {
    int err = -errno;
    guard_retire(slot);
    free(m);
    return make_int(env, err);
  }
  guard_publish(slot, base, map_length, prot);
  m->base = base;
  m->length = map_length;
  m->slot = slot;
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, (uint8_t *)base + delta, (size_t)size, finalize_mapping, m, &buffer) != napi_ok) {
    guard_retire(slot);
    munmap(base, map_length);
    free(m);
    return NULL;
  }
  // From here the finalizer owns m; a failed wrap only means munmap() cannot find it (the
  // mapping still goes when the buffer is collected).
  if (napi_wrap(env, buffer, m, NULL, NULL, NULL) != napi_ok) return NULL;
  if (out != NULL) {
    out[0] = slot;
    out[1] = sealed;
  }
  return buffer;
}

static napi_value js_munmap(napi_env env, napi_callback_info info) {
  ARGS(1);
  bool is_buffer = false;
  void *found = NULL;
  if (napi_is_arraybuffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer) return make_int(env, -EINVAL);
  if (napi_unwrap(env, argv[0], &found) != napi_ok || found == NULL) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
    return make_int(env, -EINVAL);
  }
  mapping *m = found;
  if (m->unmapped) return make_int(env, -EINVAL);
  // Detach first so no JS view can reach the pages once they are gone.
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) return make_int(env, -EBUSY);
  m->unmapped = 1;
  // Retire the guard slot before the pages go, so a later mapping at this address is never
  // mistaken for this one.
  guard_retire(m->slot);
  return make_int(env, munmap(m->base, m->length) < 0 ? -errno : 0);
}

static void finalize_nothing(napi_env env, void *data, void *hint) {}

static napi_value js_mapping_guard(napi_env env, napi_callback_info info) {
  env_state *state = get_state(env);
  if (state == NULL) return NULL;
  napi_value buffer = NULL, result, slots;
  if (state->guard_flags != NULL) napi_get_reference_value(env, state->guard_flags, &buffer);
  if (buffer == NULL) {
    if (napi_create_external_arraybuffer(env, guard_flags, sizeof guard_flags, finalize_nothing, NULL, &buffer) != napi_ok) return NULL;
    if (state->guard_flags != NULL) napi_delete_reference(env, state->guard_flags);
    if (napi_create_reference(env, buffer, 1, &state->guard_flags) != napi_ok) return NULL;
  }
  if (napi_create_object(env, &result) != napi_ok || napi_create_int32(env, GUARD_SLOTS, &slots) != napi_ok ||
      napi_set_named_property(env, result, "flags", buffer) != napi_ok ||
      napi_set_named_property(env, result, "slots", slots) != napi_ok) {
    return NULL;
  }
  return result;
}

// ---- eventfd --------------------------------------------------------------------------------
//
// O_NONBLOCK belongs to the open file description, which every process holding the eventfd
// shares: a peer can switch it to blocking at any time (QEMU does so for every fd it receives).
// A read or write that would wait must still return -EAGAIN here, never block the event loop.

static napi_value js_eventfd(napi_env env, napi_callback_info info) {
  ARGS(2);
  double initial = arg_double(env, argv[0]);
  if (!(initial >= 0 && initial <= 4294967295.0)) return make_int(env, -EINVAL);
  int flags = EFD_CLOEXEC | EFD_NONBLOCK | (arg_bool(env, argv[1]) ? EFD_SEMAPHORE : 0);
  int fd = eventfd((unsigned int)initial, flags);
  return make_int(env, fd < 0 ? -errno : fd);
}

// eventfdWrite(fd, value): value in [1, 2^53]. -EAGAIN when the counter has no room for it.
static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
  ARGS(2);
  int fd = arg_int(env, argv[0]);
  double number = arg_double(env, argv[1]);
  if (!(number >= 1 && number <= MAX_EXACT) || number != (double)(uint64_t)number) return make_int(env, -EINVAL);
  uint64_t value = (uint64_t)number;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return make_int(env, -errno);
  ssize_t r;
  if (flags & O_NONBLOCK) {
    r = write(fd, &value, sizeof value);
  } else {
    // Blocking description: POLLOUT promises room for 1; anything larger is written with
    // O_NONBLOCK set for the duration of the call, then the peer's setting is restored.
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int ready = poll(&p, 1, 0);
    if (ready < 0) return make_int(env, -errno);
    if (ready == 0 || !(p.revents & POLLOUT)) return make_int(env, (p.revents & POLLNVAL) ? -EBADF : -EAGAIN);
    if (value == 1) {
      r = write(fd, &value, sizeof value);
    } else {
      if (fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return make_int(env, -errno);
      r = write(fd, &value, sizeof value);
      int saved = errno;
      fcntl(fd, F_SETFL, flags);
      errno = saved;
    }
  }
  if (r < 0) return make_int(env, -errno);
  return make_int(env, r == sizeof value ? 0 : -EIO);
}

// eventfdRead(fd): the counter (reset), or -EAGAIN when it is zero, whatever O_NONBLOCK says.
static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd = arg_int(env, argv[0]);
  uint64_t value;
  struct iovec iov = {&value, sizeof value};
  // RWF_NOWAIT makes this one read non-blocking (eventfd supports it since Linux 5.12).
  ssize_t r = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
  if (r < 0 && (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS)) {
    // Older kernel or not an eventfd: read only when poll says a read will not wait.
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, 0);
    if (ready < 0) return make_int(env, -errno);
    if (p.revents & POLLNVAL) return make_int(env, -EBADF);
    if (ready == 0) return make_int(env, -EAGAIN);
    r = read(fd, &value, sizeof value);
  }
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
      {"pollSetStream", js_poll_set_stream},
      {"memfdCreate", js_memfd_create},
      {"fstatSize", js_fstat_size},
      {"fileIdentity", js_file_identity},
      {"mmap", js_mmap},
      {"munmap", js_munmap},
      {"mappingGuard", js_mapping_guard},
      {"mappingGuardStats", js_mapping_guard_stats},
      {"fileSeals", js_file_seals},
      {"addFileSeals", js_add_file_seals},
      {"eventfd", js_eventfd},
      {"eventfdWrite", js_eventfd_write},
      {"eventfdRead", js_eventfd_read},
  };
  env_state *state = calloc(1, sizeof *state);
  if (state == NULL) {
    napi_throw_error(env, NULL, "wasmdev transport: out of memory");
    return NULL;
  }
  state->refs = 1;
  if (napi_set_instance_data(env, state, finalize_state, NULL) != napi_ok) {
    free(state);
    return NULL;
  }
  if (napi_add_async_cleanup_hook(env, on_env_teardown, state, &state->cleanup) != napi_ok) return NULL;
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, functions[i].name, fn) != napi_ok) {
      return NULL;
    }
  }
  return exports;
}
