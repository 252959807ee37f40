/* The mirror thread (store_mirror.h): a FIFO of changes filled by the server's event loop and drained,
 * one MIRROR request at a time, by this thread over a client connection. Acknowledged sequence numbers
 * and the final state are published under the mutex and announced through the loop's eventfd. */
#define _GNU_SOURCE
#include "common/store_mirror.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/store_internal.h"

typedef struct mop {
  struct mop *next;
  uint64_t seq;
  int64_t epoch;
  int del;
  size_t klen, vlen;
  char *key; /* klen bytes + NUL */
  uint8_t *val;
} mop;

struct dtr__mirror {
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char host[256], token[DTR_STORE_MAX_TOKEN + 1], target[300];
  int port, timeout_ms, wake_fd;
  dtr_store *c; /* the thread's connection (aborted by stop) */
  mop *head, *tail;
  uint64_t next_seq, acked;
  dtr__mirror_state state;
  int64_t newer;
  int stop, exited;
  char why[512];
};

static void wake(dtr__mirror *m) {
  uint64_t one = 1;
  ssize_t r = write(m->wake_fd, &one, sizeof one);
  (void)r;
}

static void mop_free(mop *o) {
  free(o->key);
  free(o->val);
  free(o);
}

static void finish(dtr__mirror *m, dtr__mirror_state st, const char *why) {
  pthread_mutex_lock(&m->mu);
  if (m->state == DTR__MIRROR_UP) {
    m->state = st;
    snprintf(m->why, sizeof m->why, "%.500s", why);
  }
  pthread_mutex_unlock(&m->mu);
  wake(m);
}

static void run(dtr__mirror *m) {
  char err[512];
  dtr_store *c = NULL;
  dtr_result rc = dtr_store_connect(m->host, m->port, m->token, m->timeout_ms, &c, err, sizeof err);
  if (rc != DTR_OK) {
    char why[600];
    snprintf(why, sizeof why, "cannot reach the standby store: %s", err);
    finish(m, DTR__MIRROR_LOST, why);
    return;
  }
  dtr__store_set_timeouts(c, m->timeout_ms, 0);
  pthread_mutex_lock(&m->mu);
  m->c = c; /* from now on stop can abort an exchange in flight */
  pthread_mutex_unlock(&m->mu);
  for (;;) {
    pthread_mutex_lock(&m->mu);
    while (!m->head && !m->stop) pthread_cond_wait(&m->cv, &m->mu);
    if (m->stop) {
      pthread_mutex_unlock(&m->mu);
      return;
    }
    mop *o = m->head; /* stays queued until acknowledged; only this thread removes */
    pthread_mutex_unlock(&m->mu);
    int64_t newer = 0;
    rc = dtr__store_mirror_op(m->c, o->epoch, o->del, o->key, o->klen, o->val, o->vlen, &newer);
    if (rc != DTR_OK) {
      char why[700];
      snprintf(why, sizeof why, "%s", dtr_store_last_error(m->c));
      if (rc == DTR_ERR_FENCED) {
        pthread_mutex_lock(&m->mu);
        m->newer = newer;
        pthread_mutex_unlock(&m->mu);
      }
      finish(m, rc == DTR_ERR_FENCED ? DTR__MIRROR_FENCED : DTR__MIRROR_LOST, why);
      return;
    }
    pthread_mutex_lock(&m->mu);
    m->acked = o->seq;
    m->head = o->next;
    if (!m->head) m->tail = NULL;
    pthread_mutex_unlock(&m->mu);
    mop_free(o);
    wake(m);
  }
}

static void *mirror_main(void *arg) {
  dtr__mirror *m = arg;
  run(m);
  pthread_mutex_lock(&m->mu);
  m->exited = 1;
  pthread_mutex_unlock(&m->mu);
  wake(m);
  return NULL;
}

dtr_result dtr__mirror_start(const char *host, int port, const char *token, int timeout_ms, int wake_fd,
                             dtr__mirror **out) {
  *out = NULL;
  dtr__mirror *m = calloc(1, sizeof *m);
  if (!m) return DTR_ERR_NOMEM;
  snprintf(m->host, sizeof m->host, "%s", host);
  snprintf(m->token, sizeof m->token, "%s", token);
  snprintf(m->target, sizeof m->target, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
  m->port = port;
  m->timeout_ms = timeout_ms > 0 ? timeout_ms : 3000;
  m->wake_fd = wake_fd;
  pthread_mutex_init(&m->mu, NULL);
  pthread_cond_init(&m->cv, NULL);
  if (pthread_create(&m->th, NULL, mirror_main, m) != 0) {
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    return DTR_ERR_SYSTEM;
  }
  *out = m;
  return DTR_OK;
}

uint64_t dtr__mirror_push(dtr__mirror *m, int64_t epoch, int del, const void *key, size_t klen,
                          const void *val, size_t vlen) {
  mop *o = calloc(1, sizeof *o);
  if (o) {
    o->key = malloc(klen + 1);
    o->val = vlen ? malloc(vlen) : NULL;
  }
  if (!o || !o->key || (vlen && !o->val)) {
    if (o) mop_free(o);
    finish(m, DTR__MIRROR_LOST, "out of memory queueing a change");
    return 0;
  }
  memcpy(o->key, key, klen);
  o->key[klen] = '\0';
  o->klen = klen;
  if (vlen) memcpy(o->val, val, vlen);
  o->vlen = vlen;
  o->del = del;
  o->epoch = epoch;
  pthread_mutex_lock(&m->mu);
  if (m->state != DTR__MIRROR_UP) {
    pthread_mutex_unlock(&m->mu);
    mop_free(o);
    return 0;
  }
  uint64_t seq = o->seq = ++m->next_seq; /* o belongs to the thread once unlocked */
  if (m->tail)
    m->tail->next = o;
  else
    m->head = o;
  m->tail = o;
  pthread_cond_signal(&m->cv);
  pthread_mutex_unlock(&m->mu);
  return seq;
}

uint64_t dtr__mirror_acked(dtr__mirror *m, dtr__mirror_state *state, int64_t *newer, char *why, size_t cap) {
  pthread_mutex_lock(&m->mu);
  uint64_t a = m->acked;
  *state = m->state;
  *newer = m->newer;
  if (why && cap) snprintf(why, cap, "%s", m->why);
  pthread_mutex_unlock(&m->mu);
  return a;
}

const char *dtr__mirror_target(const dtr__mirror *m) {
  return m->target;
}

void dtr__mirror_retire(dtr__mirror *m) {
  pthread_mutex_lock(&m->mu);
  m->stop = 1;
  if (m->state == DTR__MIRROR_UP) {
    m->state = DTR__MIRROR_LOST;
    snprintf(m->why, sizeof m->why, "replaced");
  }
  if (m->c) dtr_store_abort(m->c); /* an exchange in flight ends within 100 ms */
  pthread_cond_signal(&m->cv);
  pthread_mutex_unlock(&m->mu);
}

int dtr__mirror_exited(dtr__mirror *m) {
  pthread_mutex_lock(&m->mu);
  int e = m->exited;
  pthread_mutex_unlock(&m->mu);
  return e;
}

void dtr__mirror_stop(dtr__mirror *m) {
  if (!m) return;
  dtr__mirror_retire(m);
  pthread_join(m->th, NULL);
  dtr_store_close(m->c);
  for (mop *o = m->head; o;) {
    mop *n = o->next;
    mop_free(o);
    o = n;
  }
  pthread_mutex_destroy(&m->mu);
  pthread_cond_destroy(&m->cv);
  free(m);
}
