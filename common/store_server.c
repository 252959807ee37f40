/* The rendezvous store server: one epoll event loop over non-blocking sockets, a key table, and
 * requests parked on missing keys until a set wakes them or their deadline passes. One thread owns
 * every structure here; other threads only touch the stop flag, the eventfd, the atomic counters and the
 * mirror request (under ctl_mu). With a standby (store_internal.h), every change of a mirrored key goes
 * to the mirror thread (store_mirror.c) and the answers it caused are held until the standby has it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/check.h"
#include "common/param.h"
#include "common/sock.h"
#include "common/store_internal.h"
#include "common/store_mirror.h"
#include "common/store_proto.h"
#include "common/store_table.h"
#include "dtrain/store.h"

#define WBUF_HIGH (1u << 20)        /* stop reading a client's requests while this much output is queued */
#define PARKED_RBUF_MAX (64u << 10) /* bytes a parked client may pipeline before we stop reading it */
#define FRAMES_PER_TURN 64          /* requests served per client per loop turn, for fairness */
#define BUF_SHRINK (1u << 20)       /* idle buffers above this are given back */

enum { CONN_HELLO, CONN_READY };

typedef struct conn conn;
typedef struct waiter waiter;

struct conn {
  int fd, state;
  uint32_t events; /* epoll interest currently registered */
  char peer[64];
  dtr__sp_buf rbuf, wbuf;
  size_t roff, woff;
  waiter *waiter;
  int64_t hello_deadline;
  conn *hprev, *hnext; /* not yet authenticated, oldest first */
  conn *rprev, *rnext; /* has buffered work for the next loop turn */
  uint64_t held;       /* > 0: answers from wbuf[hold_from] wait for the standby to have change `held` */
  size_t hold_from;
  conn *lprev, *lnext;    /* held, in order of `held` */
  int64_t frame_deadline; /* a message began arriving: it must be whole by then */
  conn *pprev, *pnext;    /* with a partial message, oldest first */
  int in_hello, in_ready, in_held, in_partial;
  conn *prev, *next; /* every connection, for destroy */
};

/* A GET or WAIT parked until its keys exist. */
struct waiter {
  conn *c;
  uint8_t op;
  int64_t deadline; /* -1: none */
  size_t heap_idx;  /* position in the deadline heap, or NOT_IN_HEAP */
  uint32_t pending; /* links still waiting for a value */
  uint32_t nlinks;
  dtr__st_link links[];
};
#define NOT_IN_HEAP ((size_t)-1)

struct dtr_store_server {
  int lfd, efd, ep, port, spare_fd;
  char token[DTR_STORE_MAX_TOKEN + 1];
  size_t tlen;
  int handshake_ms, frame_ms;
  conn *partial_head, *partial_tail;
  dtr__st_table table;
  waiter **heap;
  size_t heap_len, heap_cap;
  conn *all, *hello_head, *hello_tail, *ready_head;
  atomic_int stop, running;
  int thread_started;
  pthread_t thread;
  _Atomic uint64_t accepted, auth_refused, protocol_errors, requests, mirrored;
  /* epochs and the standby (loop thread, but for the atomics and what ctl_mu guards) */
  int64_t epoch;
  _Atomic int64_t epoch_pub;
  atomic_int fenced; /* superseded: answers nothing but EPOCH and MIRROR */
  int standby;       /* follows a primary's MIRROR requests: changes nothing for clients until promoted */
  dtr__mirror *mirror, *retiring[8];
  char mirror_prefix[64];
  uint64_t hold_seq;           /* the change being executed, for the answers it causes */
  conn *held_head, *held_tail; /* connections holding answers, oldest change first */
  pthread_mutex_t ctl_mu;      /* guards the mirror request below */
  int mirror_req;              /* 1: apply the request */
  char req_host[256], req_token[DTR_STORE_MAX_TOKEN + 1], req_prefix[64];
  int req_port, req_timeout_ms;
};

static void *listen_tag(void) {
  static char t;
  return &t;
}
static void *event_tag(void) {
  static char t;
  return &t;
}

/* ---------------------------------------------------------------- lists and the deadline heap */

static void hello_unlink(dtr_store_server *s, conn *c) {
  if (!c->in_hello) return;
  if (c->hprev)
    c->hprev->hnext = c->hnext;
  else
    s->hello_head = c->hnext;
  if (c->hnext)
    c->hnext->hprev = c->hprev;
  else
    s->hello_tail = c->hprev;
  c->in_hello = 0;
}

static void ready_push(dtr_store_server *s, conn *c) {
  if (c->in_ready) return;
  c->rprev = NULL;
  c->rnext = s->ready_head;
  if (s->ready_head) s->ready_head->rprev = c;
  s->ready_head = c;
  c->in_ready = 1;
}

static void ready_unlink(dtr_store_server *s, conn *c) {
  if (!c->in_ready) return;
  if (c->rprev)
    c->rprev->rnext = c->rnext;
  else
    s->ready_head = c->rnext;
  if (c->rnext) c->rnext->rprev = c->rprev;
  c->in_ready = 0;
}

/* A message that has begun arriving must be whole within frame_ms: a client that trickles its bytes, or
 * stops half way through a large one, is dropped instead of being kept (and buffered) forever. */
static void partial_unlink(dtr_store_server *s, conn *c) {
  if (!c->in_partial) return;
  if (c->pprev)
    c->pprev->pnext = c->pnext;
  else
    s->partial_head = c->pnext;
  if (c->pnext)
    c->pnext->pprev = c->pprev;
  else
    s->partial_tail = c->pprev;
  c->pprev = c->pnext = NULL;
  c->in_partial = 0;
}

static void partial_note(dtr_store_server *s, conn *c, int partial) {
  if (!partial) {
    partial_unlink(s, c);
    return;
  }
  if (c->in_partial) return; /* the clock runs from the message's first byte */
  c->frame_deadline = dtr__now_ms() + s->frame_ms;
  c->pprev = s->partial_tail;
  c->pnext = NULL;
  if (s->partial_tail)
    s->partial_tail->pnext = c;
  else
    s->partial_head = c;
  s->partial_tail = c;
  c->in_partial = 1;
}

static void heap_swap(dtr_store_server *s, size_t a, size_t b) {
  waiter *t = s->heap[a];
  s->heap[a] = s->heap[b];
  s->heap[b] = t;
  s->heap[a]->heap_idx = a;
  s->heap[b]->heap_idx = b;
}

static void heap_up(dtr_store_server *s, size_t i) {
  while (i > 0 && s->heap[(i - 1) / 2]->deadline > s->heap[i]->deadline) {
    heap_swap(s, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(dtr_store_server *s, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < s->heap_len && s->heap[l]->deadline < s->heap[m]->deadline) m = l;
    if (r < s->heap_len && s->heap[r]->deadline < s->heap[m]->deadline) m = r;
    if (m == i) return;
    heap_swap(s, i, m);
    i = m;
  }
}

static dtr_result heap_push(dtr_store_server *s, waiter *w) {
  if (s->heap_len == s->heap_cap) {
    size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
    waiter **h = realloc(s->heap, cap * sizeof *h);
    if (!h) return DTR_ERR_NOMEM;
    s->heap = h;
    s->heap_cap = cap;
  }
  w->heap_idx = s->heap_len;
  s->heap[s->heap_len++] = w;
  heap_up(s, w->heap_idx);
  return DTR_OK;
}

static void heap_remove(dtr_store_server *s, waiter *w) {
  size_t i = w->heap_idx;
  if (i == NOT_IN_HEAP) return;
  w->heap_idx = NOT_IN_HEAP;
  s->heap_len--;
  if (i == s->heap_len) return;
  s->heap[i] = s->heap[s->heap_len];
  s->heap[i]->heap_idx = i;
  heap_up(s, i);
  heap_down(s, s->heap[i]->heap_idx);
}

/* ---------------------------------------------------------------- responses */

static void respond_status_num(conn *c, dtr_result status, int64_t num, const char *msg) {
  size_t start;
  if (dtr__sp_response_begin(&c->wbuf, &start, (uint8_t)status, 0, num)) return;
  uint32_t n = 0;
  if (msg && dtr__sp_response_item(&c->wbuf, msg, strlen(msg)) == DTR_OK) n = 1;
  dtr__sp_response_end(&c->wbuf, start, n);
}

static void respond_status(conn *c, dtr_result status, const char *msg) {
  respond_status_num(c, status, 0, msg);
}

/* Respond with flags, a number and (optionally) one item. An allocation failure leaves a bare
 * NOMEM status, which needs no memory beyond the header the client reads. */
static void respond(conn *c, uint8_t flags, int64_t num, const void *item, size_t ilen, int has_item) {
  size_t start;
  if (dtr__sp_response_begin(&c->wbuf, &start, DTR_OK, flags, num)) return;
  if (has_item && dtr__sp_response_item(&c->wbuf, item, ilen)) {
    c->wbuf.len = start;
    respond_status(c, DTR_ERR_NOMEM, "out of memory building the response");
    return;
  }
  dtr__sp_response_end(&c->wbuf, start, has_item ? 1 : 0);
}

/* ---------------------------------------------------------------- the standby: held answers */

static void held_unlink(dtr_store_server *s, conn *c) {
  if (!c->in_held) return;
  if (c->lprev)
    c->lprev->lnext = c->lnext;
  else
    s->held_head = c->lnext;
  if (c->lnext)
    c->lnext->lprev = c->lprev;
  else
    s->held_tail = c->lprev;
  c->lprev = c->lnext = NULL;
  c->in_held = 0;
  c->held = 0;
}

/* The answers c got from wbuf[from] on depend on the change being executed (s->hold_seq): keep them
 * until the standby has it. The list stays ordered by change because changes are numbered in order. */
static void hold(dtr_store_server *s, conn *c, size_t from) {
  if (!s->hold_seq) return;
  if (c->in_held) {
    from = c->hold_from; /* an earlier held answer stays held too */
    held_unlink(s, c);
  }
  c->held = s->hold_seq;
  c->hold_from = from;
  c->lprev = s->held_tail;
  c->lnext = NULL;
  if (s->held_tail)
    s->held_tail->lnext = c;
  else
    s->held_head = c;
  s->held_tail = c;
  c->in_held = 1;
}

/* A change of a mirrored key: queue it for the standby; the answers it causes are held (hold). */
static void mirror_change(dtr_store_server *s, const void *key, size_t klen, int del, const void *v,
                          size_t vlen) {
  size_t pl = strlen(s->mirror_prefix);
  if (!s->mirror || klen < pl || memcmp(key, s->mirror_prefix, pl) != 0) return;
  uint64_t seq = dtr__mirror_push(s->mirror, s->epoch, del, key, klen, v, vlen);
  if (seq) s->hold_seq = seq;
}

/* ---------------------------------------------------------------- waiters */

/* Unhook a waiter from its keys and the deadline heap, and free it. */
static void waiter_free(dtr_store_server *s, waiter *w) {
  for (uint32_t i = 0; i < w->nlinks; i++) {
    dtr__st_entry *e = w->links[i].entry;
    if (!e) continue;
    dtr__st_link_remove(&w->links[i]);
    dtr__st_release_if_unused(&s->table, e);
  }
  heap_remove(s, w);
  free(w);
}

/* A waiter was answered: free it; its connection may serve its next request. */
static void waiter_finish(dtr_store_server *s, waiter *w) {
  conn *c = w->c;
  c->waiter = NULL;
  waiter_free(s, w);
  ready_push(s, c);
}

/* A key just gained a value: answer every GET parked on it and count it for every WAIT. */
static void wake_waiters(dtr_store_server *s, dtr__st_entry *e) {
  for (int guard = 0; e->waiters && guard < 1 << 30; guard++) {
    dtr__st_link *l = e->waiters;
    waiter *w = l->owner;
    dtr__st_link_remove(l);
    w->pending--;
    size_t from = w->c->wbuf.len;
    if (w->op == DTR__SP_GET) {
      respond(w->c, 0, 0, e->val, e->vlen, 1);
    } else if (w->pending > 0) {
      continue;
    } else {
      respond(w->c, 0, 0, NULL, 0, 0);
    }
    hold(s, w->c, from); /* what it learnt must not be lost with the primary */
    waiter_finish(s, w);
  }
}

static void expire_waiters(dtr_store_server *s, int64_t now) {
  while (s->heap_len > 0 && s->heap[0]->deadline <= now) {
    waiter *w = s->heap[0];
    char msg[160];
    if (w->op == DTR__SP_GET)
      snprintf(msg, sizeof msg, "key '%.100s' still missing at the deadline", w->links[0].entry->key);
    else
      snprintf(msg, sizeof msg, "%u of %u keys still missing at the deadline", w->pending, w->nlinks);
    respond_status(w->c, DTR_ERR_TIMEOUT, msg);
    waiter_finish(s, w);
  }
}

/* Park a GET (one key) or WAIT (its missing keys) on the connection. */
static dtr_result park(dtr_store_server *s, conn *c, const dtr__sp_request *req, uint32_t nmissing) {
  waiter *w = calloc(1, sizeof *w + nmissing * sizeof(dtr__st_link));
  if (!w) return DTR_ERR_NOMEM;
  w->c = c;
  w->op = req->op;
  w->heap_idx = NOT_IN_HEAP;
  w->deadline = req->timeout_ms < 0 ? -1 : dtr__now_ms() + req->timeout_ms;
  const uint8_t *cur = req->keys;
  for (uint16_t i = 0; i < req->nkeys && w->nlinks < nmissing; i++) {
    dtr__sp_bytes k = dtr__sp_next_key(&cur);
    dtr__st_entry *e;
    if (dtr__st_get_or_create(&s->table, k.p, k.len, &e)) goto nomem;
    if (e->has_value) continue;
    w->links[w->nlinks].owner = w;
    dtr__st_link_add(e, &w->links[w->nlinks++]);
  }
  w->pending = w->nlinks;
  if (w->deadline >= 0 && heap_push(s, w)) goto nomem;
  c->waiter = w;
  return DTR_OK;
nomem:
  c->waiter = w; /* so waiter_finish can unhook what was linked */
  waiter_finish(s, w);
  return DTR_ERR_NOMEM;
}

/* ---------------------------------------------------------------- requests */

static int parse_counter(const dtr__st_entry *e, int64_t *out) {
  if (!e || !e->has_value) {
    *out = 0;
    return 1;
  }
  if (e->vlen == 0 || e->vlen > 20) return 0;
  char *end;
  errno = 0;
  long long v = strtoll((const char *)e->val, &end, 10);
  if (errno || end != (const char *)e->val + e->vlen) return 0;
  *out = v;
  return 1;
}

static void op_add(dtr_store_server *s, conn *c, const dtr__sp_request *req) {
  dtr__st_entry *e = dtr__st_find(&s->table, req->key.p, req->key.len);
  int64_t v, nv;
  char msg[160];
  if (!parse_counter(e, &v)) {
    snprintf(msg, sizeof msg, "value of key '%.100s' is not a decimal counter", e->key);
    respond_status(c, DTR_ERR_INVALID, msg);
    return;
  }
  if (__builtin_add_overflow(v, req->delta, &nv)) {
    snprintf(msg, sizeof msg, "counter '%.100s' would overflow", e->key);
    respond_status(c, DTR_ERR_INVALID, msg);
    return;
  }
  char text[24];
  int n = snprintf(text, sizeof text, "%lld", (long long)nv);
  if (!e && dtr__st_get_or_create(&s->table, req->key.p, req->key.len, &e)) {
    respond_status(c, DTR_ERR_NOMEM, "out of memory");
    return;
  }
  if (dtr__st_set_value(e, text, (size_t)n)) {
    dtr__st_release_if_unused(&s->table, e);
    respond_status(c, DTR_ERR_NOMEM, "out of memory");
    return;
  }
  mirror_change(s, e->key, e->klen, 0, e->val, e->vlen);
  respond(c, 0, nv, NULL, 0, 0);
  wake_waiters(s, e);
}

static void op_set(dtr_store_server *s, conn *c, const dtr__sp_request *req) {
  dtr__st_entry *e = NULL;
  if (dtr__st_get_or_create(&s->table, req->key.p, req->key.len, &e) ||
      dtr__st_set_value(e, req->value.p, req->value.len)) {
    if (e) dtr__st_release_if_unused(&s->table, e);
    respond_status(c, DTR_ERR_NOMEM, "out of memory storing the value");
    return;
  }
  mirror_change(s, e->key, e->klen, 0, e->val, e->vlen);
  respond(c, 0, 0, NULL, 0, 0);
  wake_waiters(s, e);
}

static void op_cas(dtr_store_server *s, conn *c, const dtr__sp_request *req) {
  dtr__st_entry *e = dtr__st_find(&s->table, req->key.p, req->key.len);
  int present = e && e->has_value;
  int match = (req->flags & DTR__SP_REQ_HAS_EXPECTED)
                  ? present && e->vlen == req->expected.len && memcmp(e->val, req->expected.p, e->vlen) == 0
                  : !present;
  if (match) {
    if ((!e && dtr__st_get_or_create(&s->table, req->key.p, req->key.len, &e)) ||
        dtr__st_set_value(e, req->value.p, req->value.len)) {
      if (e) dtr__st_release_if_unused(&s->table, e);
      respond_status(c, DTR_ERR_NOMEM, "out of memory storing the value");
      return;
    }
    present = 1;
    mirror_change(s, e->key, e->klen, 0, e->val, e->vlen);
  }
  uint8_t flags = (uint8_t)((match ? DTR__SP_RESP_SWAPPED : 0) | (present ? DTR__SP_RESP_PRESENT : 0));
  respond(c, flags, 0, present ? e->val : NULL, present ? e->vlen : 0, present);
  if (match) wake_waiters(s, e);
}

static void op_list(dtr_store_server *s, conn *c, const dtr__sp_request *req) {
  size_t start;
  if (dtr__sp_response_begin(&c->wbuf, &start, DTR_OK, 0, 0)) return;
  uint32_t n = 0;
  for (size_t b = 0; b < s->table.nbuckets; b++) {
    for (dtr__st_entry *e = s->table.buckets[b]; e; e = e->next) {
      if (!e->has_value || e->klen < req->key.len || memcmp(e->key, req->key.p, req->key.len) != 0) continue;
      if (c->wbuf.len - start + 4 + e->klen > DTR__SP_MAX_FRAME ||
          dtr__sp_response_item(&c->wbuf, e->key, e->klen)) {
        c->wbuf.len = start;
        respond_status(c, DTR_ERR_INVALID, "too many keys match the prefix for one response");
        return;
      }
      n++;
    }
  }
  dtr__sp_response_end(&c->wbuf, start, n);
}

/* A change from the primary (this server is its standby). From an older epoch it is refused: that
 * primary was superseded, and the refusal is how it learns. */
static void op_mirror(dtr_store_server *s, conn *c, const dtr__sp_request *req) {
  char msg[160];
  if (req->delta < s->epoch) {
    snprintf(msg, sizeof msg, "a change of epoch %lld, but this store is at epoch %lld",
             (long long)req->delta, (long long)s->epoch);
    respond_status_num(c, DTR_ERR_FENCED, s->epoch, msg);
    return;
  }
  if (req->delta > s->epoch || !s->standby) { /* the standby of this primary (of a newer epoch) from now */
    if (req->delta > s->epoch) s->epoch = req->delta;
    atomic_store(&s->epoch_pub, s->epoch);
    atomic_store(&s->fenced, 0);
    s->standby = 1;
    if (s->mirror) { /* a standby mirrors nothing onward: the loop drops its own mirror (mirror_poll) */
      uint64_t one = 1;
      ssize_t r = write(s->efd, &one, sizeof one);
      (void)r;
    }
  }
  dtr__st_entry *e = dtr__st_find(&s->table, req->key.p, req->key.len);
  if (req->flags & DTR__SP_REQ_DELETE) {
    if (e && e->has_value) dtr__st_clear_value(&s->table, e);
    respond(c, 0, s->epoch, NULL, 0, 0);
    return;
  }
  if ((!e && dtr__st_get_or_create(&s->table, req->key.p, req->key.len, &e)) ||
      dtr__st_set_value(e, req->value.p, req->value.len)) {
    if (e) dtr__st_release_if_unused(&s->table, e);
    respond_status(c, DTR_ERR_NOMEM, "out of memory storing the value");
    return;
  }
  respond(c, 0, s->epoch, NULL, 0, 0);
  wake_waiters(s, e);
}

static void execute(dtr_store_server *s, conn *c, const dtr__sp_request *req) {
  atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
  dtr__st_entry *e;
  int changes =
      req->op == DTR__SP_SET || req->op == DTR__SP_ADD || req->op == DTR__SP_CAS || req->op == DTR__SP_DELETE;
  if ((atomic_load(&s->fenced) || (s->standby && changes)) && req->op != DTR__SP_EPOCH &&
      req->op != DTR__SP_MIRROR) {
    char msg[160];
    if (s->standby)
      snprintf(msg, sizeof msg,
               "this store is the standby of epoch %lld's primary: it takes no changes until promoted",
               (long long)s->epoch);
    else
      snprintf(msg, sizeof msg, "this store was superseded by epoch %lld: its standby took over",
               (long long)s->epoch);
    respond_status_num(c, DTR_ERR_FENCED, s->epoch, msg);
    return;
  }
  switch (req->op) {
    case DTR__SP_MIRROR:
      op_mirror(s, c, req);
      return;
    case DTR__SP_EPOCH:
      if (req->delta > s->epoch) { /* promoted: the primary from now on */
        s->epoch = req->delta;
        atomic_store(&s->epoch_pub, s->epoch);
        atomic_store(&s->fenced, 0);
        s->standby = 0;
        DTR_INFO("store: promoted to epoch %lld by %s", (long long)s->epoch, c->peer);
      }
      respond(c, 0, s->epoch, NULL, 0, 0);
      return;
    case DTR__SP_SET:
      op_set(s, c, req);
      return;
    case DTR__SP_ADD:
      op_add(s, c, req);
      return;
    case DTR__SP_CAS:
      op_cas(s, c, req);
      return;
    case DTR__SP_LIST:
      op_list(s, c, req);
      return;
    case DTR__SP_TRY_GET:
    case DTR__SP_GET:
      e = dtr__st_find(&s->table, req->key.p, req->key.len);
      if (e && e->has_value) {
        respond(c, 0, 0, e->val, e->vlen, 1);
        return;
      }
      if (req->op == DTR__SP_TRY_GET) {
        respond_status(c, DTR_ERR_NOT_FOUND, NULL);
        return;
      }
      if (req->timeout_ms == 0) {
        respond_status(c, DTR_ERR_TIMEOUT, "key missing and timeout 0");
        return;
      }
      if (park(s, c, req, 1)) respond_status(c, DTR_ERR_NOMEM, "out of memory parking the request");
      return;
    case DTR__SP_DELETE:
      e = dtr__st_find(&s->table, req->key.p, req->key.len);
      if (e && e->has_value) {
        mirror_change(s, e->key, e->klen, 1, NULL, 0);
        dtr__st_clear_value(&s->table, e);
        respond(c, DTR__SP_RESP_EXISTED, 0, NULL, 0, 0);
        return;
      }
      respond(c, 0, 0, NULL, 0, 0);
      return;
    case DTR__SP_WAIT: {
      uint32_t missing = 0;
      const uint8_t *cur = req->keys;
      for (uint16_t i = 0; i < req->nkeys; i++) {
        dtr__sp_bytes k = dtr__sp_next_key(&cur);
        e = dtr__st_find(&s->table, k.p, k.len);
        if (!e || !e->has_value) missing++;
      }
      if (missing == 0) {
        respond(c, 0, 0, NULL, 0, 0);
        return;
      }
      if (req->timeout_ms == 0) {
        respond_status(c, DTR_ERR_TIMEOUT, "keys missing and timeout 0");
        return;
      }
      if (park(s, c, req, missing)) respond_status(c, DTR_ERR_NOMEM, "out of memory parking the request");
      return;
    }
  }
}

/* ---------------------------------------------------------------- connections */

static void conn_close(dtr_store_server *s, conn *c) {
  if (c->waiter) waiter_free(s, c->waiter);
  held_unlink(s, c);
  partial_unlink(s, c);
  hello_unlink(s, c);
  ready_unlink(s, c);
  if (c->prev)
    c->prev->next = c->next;
  else
    s->all = c->next;
  if (c->next) c->next->prev = c->prev;
  /* Deregister explicitly: close() drops the registration only when every copy of the socket is
   * closed, and a process forked from ours (a worker before exec, the launcher's orphan guard) may
   * still hold one; events would then arrive for a freed conn. */
  epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  dtr__sp_buf_free(&c->rbuf);
  dtr__sp_buf_free(&c->wbuf);
  free(c);
}

/* Send what is queued; returns -1 when the peer is gone. */
static int conn_flush(conn *c) {
  size_t end = c->held ? c->hold_from : c->wbuf.len; /* held answers wait for the standby */
  while (c->woff < end) {
    ssize_t n = send(c->fd, c->wbuf.p + c->woff, end - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->woff += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return 0;
    } else {
      return -1;
    }
  }
  if (end != c->wbuf.len) return 0;
  c->woff = c->wbuf.len = 0;
  if (c->wbuf.cap > BUF_SHRINK) dtr__sp_buf_free(&c->wbuf);
  return 0;
}

/* A client broke the protocol or failed the handshake: tell it why (best effort), log it, drop it. */
static void conn_reject(dtr_store_server *s, conn *c, dtr_result why, const char *msg) {
  /* Count before answering, so a client that saw the refusal also sees it in the stats. */
  if (why == DTR_ERR_AUTH) {
    atomic_fetch_add(&s->auth_refused, 1);
    DTR_WARN("store: refused client %s: %s", c->peer, msg);
  } else {
    atomic_fetch_add(&s->protocol_errors, 1);
    DTR_WARN("store: closing connection from %s: %s", c->peer, msg);
  }
  if (c->state == CONN_HELLO)
    dtr__sp_encode_hello_reply(&c->wbuf, (uint8_t)why, msg);
  else
    respond_status(c, why, msg);
  conn_flush(c);
  conn_close(s, c);
}

static int token_equal(const dtr_store_server *s, const dtr__sp_bytes *t) {
  /* Constant time in the token's content, so timing reveals nothing but its length. */
  if (t->len != s->tlen) return 0;
  unsigned diff = 0;
  for (size_t i = 0; i < s->tlen; i++) diff |= (unsigned)(t->p[i] ^ (uint8_t)s->token[i]);
  return diff == 0;
}

/* Returns 1 when the hello was handled and the connection lives on, 0 for "need more bytes",
 * -1 when the connection was closed. */
static int conn_hello(dtr_store_server *s, conn *c) {
  char err[160];
  uint16_t version;
  dtr__sp_bytes token;
  long n = dtr__sp_parse_hello(c->rbuf.p + c->roff, c->rbuf.len - c->roff, &version, &token, err, sizeof err);
  if (n == 0) return 0;
  if (n < 0) return conn_reject(s, c, DTR_ERR_PROTOCOL, err), -1;
  if (version != DTR__SP_VERSION) {
    snprintf(err, sizeof err, "protocol version %u is not supported (this store speaks %d)", version,
             DTR__SP_VERSION);
    return conn_reject(s, c, DTR_ERR_PROTOCOL, err), -1;
  }
  if (!token_equal(s, &token))
    return conn_reject(s, c, DTR_ERR_AUTH, token.len ? "wrong job token" : "no job token (DTRAIN_JOB_TOKEN)"),
           -1;
  c->roff += (size_t)n;
  c->state = CONN_READY;
  hello_unlink(s, c);
  dtr__sp_encode_hello_reply(&c->wbuf, DTR_OK, NULL);
  return 1;
}

/* Serve the complete requests buffered on c. Returns -1 when c was closed. */
static int conn_process(dtr_store_server *s, conn *c) {
  char err[160];
  int turns = 0;
  while (!c->waiter && !c->held && c->wbuf.len - c->woff < WBUF_HIGH) {
    if (turns++ == FRAMES_PER_TURN) {
      ready_push(s, c); /* more may be buffered: continue next loop turn, after the others */
      break;
    }
    size_t avail = c->rbuf.len - c->roff;
    const uint8_t *p = c->rbuf.p + c->roff;
    if (c->state == CONN_HELLO) {
      if (avail == 0) break;
      int h = conn_hello(s, c);
      if (h < 0) return -1;
      if (h == 0) break;
      continue;
    }
    if (avail < 4) break;
    uint32_t flen;
    if (dtr__sp_frame_len(p, DTR__SP_MAX_FRAME, &flen, err, sizeof err))
      return conn_reject(s, c, DTR_ERR_PROTOCOL, err), -1;
    if (avail - 4 < flen) break;
    dtr__sp_request req;
    if (dtr__sp_parse_request(p + 4, flen, &req, err, sizeof err))
      return conn_reject(s, c, DTR_ERR_PROTOCOL, err), -1;
    c->roff += 4 + (size_t)flen;
    size_t from = c->wbuf.len;
    execute(s, c, &req);
    hold(s, c, from);
    s->hold_seq = 0;
  }
  /* Unconsumed bytes of a connection that is not parked are a message still arriving. */
  partial_note(s, c, c->state == CONN_READY && !c->waiter && !c->held && c->rbuf.len > c->roff);
  /* Keep the unconsumed tail at the front so the next read appends to it. */
  if (c->roff == c->rbuf.len) {
    c->roff = c->rbuf.len = 0;
    if (c->rbuf.cap > BUF_SHRINK) dtr__sp_buf_free(&c->rbuf);
  } else if (c->roff > 0) {
    memmove(c->rbuf.p, c->rbuf.p + c->roff, c->rbuf.len - c->roff);
    c->rbuf.len -= c->roff;
    c->roff = 0;
  }
  return 0;
}

/* How many bytes the next read should have room for: a chunk, or for a large frame being received as
 * much again as has arrived (never more than its rest). The buffer grows with what the client sends,
 * not with what its header announces: a header claiming 32 MiB followed by silence costs 16 KiB. Only a
 * frame whose header passed the size check (the connection is not parked, so conn_process has looked at
 * it) may grow the buffer beyond a chunk. */
static size_t read_room(const conn *c) {
  size_t avail = c->rbuf.len - c->roff, want = 16384;
  if (c->state == CONN_READY && !c->waiter && avail >= 4) {
    size_t whole = 4 + (size_t)dtr__sp_get_u32(c->rbuf.p + c->roff);
    if (whole <= 4 + (size_t)DTR__SP_MAX_FRAME && whole > avail) {
      size_t rest = whole - avail, more = avail > want ? avail : want;
      want = rest < more ? rest : more;
    }
  }
  return want;
}

static int wants_read(const conn *c) {
  if (c->wbuf.len - c->woff >= WBUF_HIGH) return 0;
  if (c->waiter && c->rbuf.len - c->roff >= PARKED_RBUF_MAX) return 0;
  return 1;
}

static int conn_update_interest(dtr_store_server *s, conn *c) {
  size_t end = c->held ? c->hold_from : c->wbuf.len;
  uint32_t ev = (wants_read(c) ? EPOLLIN : 0) | (c->woff < end ? EPOLLOUT : 0);
  if (ev == c->events) return 0;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  if (epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e) < 0) return -1;
  c->events = ev;
  return 0;
}

/* Process, flush and re-arm; closes the connection if the peer is gone. */
static void conn_settle(dtr_store_server *s, conn *c) {
  if (conn_process(s, c) < 0) return;
  if (conn_flush(c) < 0 || conn_update_interest(s, c) < 0) conn_close(s, c);
}

/* The peer closed. Half a message left behind is a truncated message: count and log it. */
static void conn_eof(dtr_store_server *s, conn *c) {
  size_t left = c->rbuf.len - c->roff;
  if (left == 0) {
    conn_close(s, c);
    return;
  }
  char msg[96];
  snprintf(msg, sizeof msg, "connection closed in the middle of a message (%zu bytes pending)", left);
  conn_reject(s, c, DTR_ERR_PROTOCOL, msg);
}

static void conn_event(dtr_store_server *s, conn *c, uint32_t events) {
  int can_read = (events & EPOLLIN) && wants_read(c);
  if ((events & (EPOLLERR | EPOLLHUP)) && !can_read) {
    conn_close(s, c);
    return;
  }
  if (can_read) {
    if (dtr__sp_reserve(&c->rbuf, read_room(c))) {
      conn_reject(s, c, DTR_ERR_NOMEM, "out of memory for a message");
      return;
    }
    ssize_t n = recv(c->fd, c->rbuf.p + c->rbuf.len, c->rbuf.cap - c->rbuf.len, MSG_DONTWAIT);
    if (n == 0) {
      conn_eof(s, c);
      return;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      conn_close(s, c);
      return;
    }
    if (n > 0) c->rbuf.len += (size_t)n;
  }
  if ((events & EPOLLOUT) && conn_flush(c) < 0) {
    conn_close(s, c);
    return;
  }
  conn_settle(s, c);
}

/* Out of descriptors: free the spare, accept and drop the newcomer so the backlog does not spin the
 * loop, then take the spare back (the redis/libuv trick). */
static void shed_connection(dtr_store_server *s) {
  if (s->spare_fd >= 0) close(s->spare_fd);
  int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd >= 0) close(fd);
  s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  DTR_WARN("store: out of file descriptors; dropped a new connection");
}

static void accept_clients(dtr_store_server *s) {
  for (int i = 0; i < 256; i++) {
    int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE)
        shed_connection(s);
      else if (errno != EAGAIN && errno != EWOULDBLOCK)
        DTR_WARN("store: accept: %s", strerror(errno));
      return;
    }
    conn *c = calloc(1, sizeof *c);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    if (!c || epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
      DTR_WARN("store: cannot register a new connection: %s", c ? strerror(errno) : "out of memory");
      free(c);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->events = EPOLLIN;
    c->state = CONN_HELLO;
    dtr__sock_peer_name(fd, c->peer, sizeof c->peer);
    c->hello_deadline = dtr__now_ms() + s->handshake_ms;
    c->hprev = s->hello_tail;
    if (s->hello_tail)
      s->hello_tail->hnext = c;
    else
      s->hello_head = c;
    s->hello_tail = c;
    c->in_hello = 1;
    c->next = s->all;
    if (s->all) s->all->prev = c;
    s->all = c;
    atomic_fetch_add(&s->accepted, 1);
  }
}

static void expire_hellos(dtr_store_server *s, int64_t now) {
  while (s->hello_head && s->hello_head->hello_deadline <= now) {
    conn *c = s->hello_head;
    atomic_fetch_add(&s->protocol_errors, 1);
    DTR_WARN("store: dropping %s: no handshake within %d ms", c->peer, s->handshake_ms);
    conn_close(s, c);
  }
}

/* ---------------------------------------------------------------- the standby: the loop's side */

/* Release, in change order, every held answer whose change the standby has. */
static void release_held(dtr_store_server *s, uint64_t acked) {
  for (int guard = 0; s->held_head && s->held_head->held <= acked && guard < 1 << 30; guard++) {
    conn *c = s->held_head;
    held_unlink(s, c);
    conn_settle(s, c);
  }
}

/* A newer epoch exists: the held answers become refusals, and so will every later answer. */
static void fence(dtr_store_server *s, int64_t newer) {
  atomic_store(&s->fenced, 1);
  char msg[160];
  snprintf(msg, sizeof msg, "this store was superseded by epoch %lld: its standby took over",
           (long long)newer);
  for (int guard = 0; s->held_head && guard < 1 << 30; guard++) {
    conn *c = s->held_head;
    c->wbuf.len = c->hold_from;
    held_unlink(s, c);
    respond_status_num(c, DTR_ERR_FENCED, newer, msg);
    conn_settle(s, c);
  }
}

static void retire_mirror(dtr_store_server *s) {
  if (!s->mirror) return;
  dtr__mirror_retire(s->mirror);
  size_t i = 0;
  while (i < sizeof s->retiring / sizeof s->retiring[0] && s->retiring[i]) i++;
  if (i < sizeof s->retiring / sizeof s->retiring[0])
    s->retiring[i] = s->mirror;
  else
    dtr__mirror_stop(s->mirror); /* no slot: wait for it here (rare) */
  s->mirror = NULL;
}

static void apply_mirror_request(dtr_store_server *s) {
  char host[256], token[DTR_STORE_MAX_TOKEN + 1], prefix[64];
  int port, timeout_ms, req;
  pthread_mutex_lock(&s->ctl_mu);
  req = s->mirror_req;
  s->mirror_req = 0;
  memcpy(host, s->req_host, sizeof host);
  memcpy(token, s->req_token, sizeof token);
  memcpy(prefix, s->req_prefix, sizeof prefix);
  port = s->req_port;
  timeout_ms = s->req_timeout_ms;
  memset(s->req_token, 0, sizeof s->req_token);
  pthread_mutex_unlock(&s->ctl_mu);
  if (!req) return;
  retire_mirror(s);
  release_held(s, UINT64_MAX); /* nothing waits for a standby that is gone */
  if (!host[0]) return;
  if (s->standby) {
    DTR_WARN("store: a standby mirrors nothing onward; not mirroring to %s:%d", host, port);
    return;
  }
  if (atomic_load(&s->fenced)) {
    DTR_WARN("store: superseded by epoch %lld; not mirroring to %s:%d", (long long)s->epoch, host, port);
    return;
  }
  if (dtr__mirror_start(host, port, token, timeout_ms, s->efd, &s->mirror) != DTR_OK) {
    DTR_WARN("store: cannot start mirroring to %s:%d; running unmirrored", host, port);
    return;
  }
  memcpy(s->mirror_prefix, prefix, sizeof s->mirror_prefix);
  /* the standby starts from a copy of every mirrored key */
  size_t pl = strlen(prefix), n = 0;
  for (size_t b = 0; b < s->table.nbuckets; b++)
    for (dtr__st_entry *e = s->table.buckets[b]; e; e = e->next)
      if (e->has_value && e->klen >= pl && memcmp(e->key, prefix, pl) == 0) {
        dtr__mirror_push(s->mirror, s->epoch, 0, e->key, e->klen, e->val, e->vlen);
        n++;
      }
  DTR_INFO("store: epoch %lld, mirroring keys '%s*' to the standby %s (%zu to copy)", (long long)s->epoch,
           prefix, dtr__mirror_target(s->mirror), n);
}

/* The eventfd rang: a mirror request, acknowledgements, or a mirror that stopped. */
static void mirror_poll(dtr_store_server *s) {
  for (size_t i = 0; i < sizeof s->retiring / sizeof s->retiring[0]; i++)
    if (s->retiring[i] && dtr__mirror_exited(s->retiring[i])) {
      dtr__mirror_stop(s->retiring[i]);
      s->retiring[i] = NULL;
    }
  apply_mirror_request(s);
  if (s->standby && s->mirror) {
    DTR_INFO("store: now the standby of epoch %lld's primary; no longer mirroring to %s", (long long)s->epoch,
             dtr__mirror_target(s->mirror));
    retire_mirror(s);
    release_held(s, UINT64_MAX);
  }
  if (!s->mirror) return;
  dtr__mirror_state st;
  int64_t newer = 0;
  char why[512];
  uint64_t acked = dtr__mirror_acked(s->mirror, &st, &newer, why, sizeof why);
  atomic_store(&s->mirrored, acked);
  release_held(s, acked);
  if (st == DTR__MIRROR_FENCED) {
    DTR_WARN("store: the standby %s refused a change: %s; this store is superseded and answers nothing more",
             dtr__mirror_target(s->mirror), why);
    if (newer > s->epoch) s->epoch = newer;
    atomic_store(&s->epoch_pub, s->epoch);
    fence(s, newer);
    retire_mirror(s);
  } else if (st == DTR__MIRROR_LOST) {
    DTR_WARN("store: lost the standby %s (%s); running unmirrored until the agents name another",
             dtr__mirror_target(s->mirror), why);
    retire_mirror(s);
    release_held(s, UINT64_MAX);
  }
}

static void expire_partials(dtr_store_server *s, int64_t now) {
  while (s->partial_head && s->partial_head->frame_deadline <= now) {
    conn *c = s->partial_head;
    char msg[128];
    snprintf(msg, sizeof msg, "a message still incomplete after %d ms (%zu bytes of it arrived)", s->frame_ms,
             c->rbuf.len - c->roff);
    conn_reject(s, c, DTR_ERR_PROTOCOL, msg);
  }
}

static int next_timeout(dtr_store_server *s) {
  if (s->ready_head) return 0;
  int64_t d = -1;
  if (s->heap_len) d = s->heap[0]->deadline;
  if (s->hello_head && (d < 0 || s->hello_head->hello_deadline < d)) d = s->hello_head->hello_deadline;
  if (s->partial_head && (d < 0 || s->partial_head->frame_deadline < d)) d = s->partial_head->frame_deadline;
  return dtr__ms_left(d);
}

dtr_result dtr_store_server_run(dtr_store_server *s) {
  if (atomic_exchange(&s->running, 1)) return DTR_ERR_INVALID;
  struct epoll_event evs[256];
  while (!atomic_load(&s->stop)) {
    int n = epoll_wait(s->ep, evs, 256, next_timeout(s));
    if (n < 0 && errno != EINTR) {
      DTR_ERROR("store: epoll_wait: %s", strerror(errno));
      return DTR_ERR_SYSTEM;
    }
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == listen_tag()) {
        accept_clients(s);
      } else if (evs[i].data.ptr == event_tag()) {
        uint64_t v;
        ssize_t r = read(s->efd, &v, sizeof v);
        (void)r;
        mirror_poll(s);
      } else {
        conn_event(s, evs[i].data.ptr, evs[i].events);
      }
    }
    int64_t now = dtr__now_ms();
    expire_waiters(s, now);
    expire_hellos(s, now);
    expire_partials(s, now);
    /* Serve connections whose waiters were answered or that had more requests than one turn. */
    conn *ready = s->ready_head;
    s->ready_head = NULL;
    for (conn *c = ready; c;) {
      conn *next = c->rnext;
      c->in_ready = 0;
      c->rprev = c->rnext = NULL;
      if (next) next->rprev = NULL;
      ready = next; /* keep the detached chain's head valid if conn_settle closes c */
      conn_settle(s, c);
      c = ready;
    }
  }
  return DTR_OK;
}

/* ---------------------------------------------------------------- lifecycle */

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

dtr_result dtr_store_server_create(const char *host, int port, const char *token, dtr_store_server **out,
                                   char *err, size_t errcap) {
  *out = NULL;
  size_t tlen = token ? strlen(token) : 0;
  if (tlen == 0 || tlen > DTR_STORE_MAX_TOKEN)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "the job token must be 1 to %d bytes (got %zu)",
                     DTR_STORE_MAX_TOKEN, tlen);
  if (port < 0 || port > 65535)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "port %d is out of range", port);
  dtr_store_server *s = calloc(1, sizeof *s);
  if (!s) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
  s->lfd = s->efd = s->ep = s->spare_fd = -1;
  pthread_mutex_init(&s->ctl_mu, NULL);
  memcpy(s->token, token, tlen);
  s->tlen = tlen;
  s->handshake_ms = (int)dtr__param_int("DTRAIN_STORE_HANDSHAKE_MS", 5000);
  if (s->handshake_ms <= 0) s->handshake_ms = 5000;
  s->frame_ms = (int)dtr__param_range("DTRAIN_STORE_FRAME_MS", 30000, 1, 3600000);
  raise_fd_limit();
  dtr_result rc;
  DTR_CHECK_GOTO(dtr__listen(host, port, 4096, &s->lfd, &s->port, err, errcap), rc, fail);
  rc = DTR_ERR_SYSTEM;
  s->ep = epoll_create1(EPOLL_CLOEXEC);
  s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (s->ep < 0 || s->efd < 0) {
    dtr__fail(err, errcap, rc, "store: epoll/eventfd: %s", strerror(errno));
    goto fail;
  }
  struct epoll_event le = {.events = EPOLLIN, .data.ptr = listen_tag()};
  struct epoll_event ee = {.events = EPOLLIN, .data.ptr = event_tag()};
  if (epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &le) < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, s->efd, &ee) < 0) {
    dtr__fail(err, errcap, rc, "store: epoll_ctl: %s", strerror(errno));
    goto fail;
  }
  if (dtr__st_init(&s->table)) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
    goto fail;
  }
  *out = s;
  return DTR_OK;
fail:
  dtr_store_server_destroy(s);
  return rc;
}

int dtr_store_server_port(const dtr_store_server *s) {
  return s->port;
}

static void *loop_main(void *arg) {
  dtr_store_server_run(arg);
  return NULL;
}

dtr_result dtr_store_server_start(dtr_store_server *s) {
  if (s->thread_started) return DTR_ERR_INVALID;
  if (pthread_create(&s->thread, NULL, loop_main, s) != 0) return DTR_ERR_SYSTEM;
  s->thread_started = 1;
  return DTR_OK;
}

void dtr_store_server_stop(dtr_store_server *s) {
  if (!s) return;
  atomic_store(&s->stop, 1);
  uint64_t one = 1;
  ssize_t r = write(s->efd, &one, sizeof one); /* async-signal-safe */
  (void)r;
}

void dtr_store_server_destroy(dtr_store_server *s) {
  if (!s) return;
  if (s->thread_started) {
    dtr_store_server_stop(s);
    pthread_join(s->thread, NULL);
  }
  dtr__mirror_stop(s->mirror);
  for (size_t i = 0; i < sizeof s->retiring / sizeof s->retiring[0]; i++) dtr__mirror_stop(s->retiring[i]);
  for (int guard = 0; s->all && guard < 1 << 30; guard++) conn_close(s, s->all);
  if (s->table.buckets) dtr__st_free(&s->table);
  pthread_mutex_destroy(&s->ctl_mu);
  free(s->heap);
  if (s->lfd >= 0) close(s->lfd);
  if (s->efd >= 0) close(s->efd);
  if (s->ep >= 0) close(s->ep);
  if (s->spare_fd >= 0) close(s->spare_fd);
  free(s);
}

void dtr_store_server_get_stats(const dtr_store_server *s, dtr_store_server_stats *out) {
  dtr_store_server *m = (dtr_store_server *)s; /* atomics are read-only here; C11 loads need non-const */
  out->accepted = atomic_load(&m->accepted);
  out->auth_refused = atomic_load(&m->auth_refused);
  out->protocol_errors = atomic_load(&m->protocol_errors);
  out->requests = atomic_load(&m->requests);
}

/* ---------------------------------------------------------------- the standby: other threads' side */

dtr_result dtr__store_server_mirror(dtr_store_server *s, const char *host, int port, const char *token,
                                    const char *prefix, int timeout_ms) {
  if (host && (strlen(host) >= sizeof s->req_host || port <= 0 || port > 65535 || !token ||
               strlen(token) > DTR_STORE_MAX_TOKEN || !prefix || strlen(prefix) >= sizeof s->req_prefix))
    return DTR_ERR_INVALID;
  pthread_mutex_lock(&s->ctl_mu);
  snprintf(s->req_host, sizeof s->req_host, "%s", host ? host : "");
  snprintf(s->req_token, sizeof s->req_token, "%s", host ? token : "");
  snprintf(s->req_prefix, sizeof s->req_prefix, "%s", host ? prefix : "");
  s->req_port = port;
  s->req_timeout_ms = timeout_ms;
  s->mirror_req = 1;
  pthread_mutex_unlock(&s->ctl_mu);
  uint64_t one = 1;
  ssize_t r = write(s->efd, &one, sizeof one);
  (void)r;
  return DTR_OK;
}

int64_t dtr__store_server_epoch(const dtr_store_server *s) {
  return atomic_load(&((dtr_store_server *)s)->epoch_pub);
}

int dtr__store_server_fenced(const dtr_store_server *s) {
  return atomic_load(&((dtr_store_server *)s)->fenced);
}

uint64_t dtr__store_server_mirrored(const dtr_store_server *s) {
  return atomic_load(&((dtr_store_server *)s)->mirrored);
}
