/* Rendezvous rounds over the store; see rendezvous.h for the protocol. Every wait is a blocking store
 * call cut into slices of at most 200 ms, so a signal to the agent is noticed while it waits. */
#define _GNU_SOURCE
#include "launcher/rendezvous.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sock.h"
#include "common/store_internal.h"

#define SLICE_MS 200

void dtr__rdzv_key(char *out, size_t cap, const char *run_id, int round, const char *suffix) {
  snprintf(out, cap, "rdzv/%s/r%d/%s", run_id, round, suffix);
}

int dtr__node_info_format(const dtr__node_info *ni, char *out, size_t cap) {
  return snprintf(out, cap, "host=%s\naddr=%s\nnproc=%d\nrank=%d\npid=%d\nprev=%d\nstore=%s\nprimary=%d\n",
                  ni->host, ni->addr, ni->nproc, ni->want_rank, ni->pid, ni->prev_rank, ni->store,
                  ni->primary);
}

dtr_result dtr__node_info_parse(const char *text, size_t len, dtr__node_info *ni) {
  memset(ni, 0, sizeof *ni);
  ni->want_rank = -1;
  ni->prev_rank = -1;
  int seen = 0;
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
    const char *eq = memchr(p, '=', ll);
    if (eq) {
      size_t kl = (size_t)(eq - p), vl = ll - kl - 1;
      char v[256];
      if (vl >= sizeof v) return DTR_ERR_PROTOCOL;
      memcpy(v, eq + 1, vl);
      v[vl] = '\0';
      if (kl == 4 && !memcmp(p, "host", 4))
        strcpy(ni->host, v), seen |= 1;
      else if (kl == 4 && !memcmp(p, "addr", 4) && vl < sizeof ni->addr)
        strcpy(ni->addr, v), seen |= 2;
      else if (kl == 5 && !memcmp(p, "nproc", 5))
        ni->nproc = atoi(v), seen |= 4;
      else if (kl == 4 && !memcmp(p, "rank", 4))
        ni->want_rank = atoi(v);
      else if (kl == 3 && !memcmp(p, "pid", 3))
        ni->pid = atoi(v);
      else if (kl == 4 && !memcmp(p, "prev", 4))
        ni->prev_rank = atoi(v);
      else if (kl == 5 && !memcmp(p, "store", 5))
        snprintf(ni->store, sizeof ni->store, "%s", v);
      else if (kl == 7 && !memcmp(p, "primary", 7))
        ni->primary = atoi(v);
    }
    p += ll + 1;
  }
  return seen == 7 && ni->nproc > 0 ? DTR_OK : DTR_ERR_PROTOCOL;
}

int dtr__rdzv_quorum(int prev, int tie_wins) {
  if (prev <= 0) return 0;
  return prev % 2 == 0 && tie_wins ? prev / 2 : prev / 2 + 1;
}

static int cmp_nodes(const void *a, const void *b) {
  const dtr__node_info *x = *(const dtr__node_info *const *)a, *y = *(const dtr__node_info *const *)b;
  int c = strcmp(x->addr, y->addr);
  if (c) return c;
  c = strcmp(x->host, y->host);
  if (c) return c;
  long px = x->prev_rank < 0 ? 1L << 30 : x->prev_rank, py = y->prev_rank < 0 ? 1L << 30 : y->prev_rank;
  if (px != py) return px < py ? -1 : 1;
  return x->idx - y->idx;
}

dtr_result dtr__rdzv_assign(const dtr__node_info *nodes, int n, int *ranks, char *err, size_t cap) {
  int *taken = calloc((size_t)n, sizeof *taken);
  const dtr__node_info **order = malloc((size_t)n * sizeof *order);
  dtr_result rc = DTR_OK;
  if (!taken || !order) {
    rc = DTR_ERR_NOMEM;
    goto out;
  }
  for (int i = 0; i < n; i++) {
    ranks[i] = -1;
    int w = nodes[i].want_rank;
    if (w < 0) continue;
    if (w >= n) {
      rc = dtr__fail(err, cap, DTR_ERR_INVALID, "node %s asked for --node-rank %d but only %d nodes joined",
                     nodes[i].host, w, n);
      goto out;
    }
    if (taken[w]) {
      int other = taken[w] - 1;
      rc = dtr__fail(err, cap, DTR_ERR_INVALID,
                     "nodes %s (pid %d) and %s (pid %d) both asked for --node-rank %d", nodes[other].host,
                     nodes[other].pid, nodes[i].host, nodes[i].pid, w);
      goto out;
    }
    taken[w] = i + 1;
    ranks[i] = w;
  }
  int m = 0;
  for (int i = 0; i < n; i++)
    if (ranks[i] < 0) order[m++] = &nodes[i];
  qsort(order, (size_t)m, sizeof *order, cmp_nodes);
  int next = 0;
  for (int k = 0; k < m; k++) {
    while (taken[next]) next++;
    int i = (int)(order[k] - nodes);
    ranks[i] = next;
    taken[next] = i + 1;
  }
out:
  free(taken);
  free(order);
  return rc;
}

/* What a join is waiting for, said every cfg->say_every_ms while it waits (waiting is never silent). */
typedef struct waiting {
  const dtr__rdzv_cfg *cfg;
  int64_t since, said;
  char what[256];
} waiting;

static void say_waiting(waiting *w, int64_t deadline) {
  if (!w || w->cfg->say_every_ms <= 0) return;
  int64_t now = dtr__now_ms();
  if (now - (w->said ? w->said : w->since) < w->cfg->say_every_ms) return;
  w->said = now;
  int left = dtr__ms_left(deadline);
  if (left >= 0)
    DTR_INFO("waiting %.0f s for %s; giving up in %.0f s", (now - w->since) / 1000.0, w->what, left / 1000.0);
  else
    DTR_INFO("waiting %.0f s for %s", (now - w->since) / 1000.0, w->what);
}

/* get with a deadline, in slices, checking for signals; a passed deadline means one try_get. */
static dtr_result wait_get(dtr_store *c, const dtr__rdzv_cfg *cfg, const char *key, int64_t deadline,
                           void **val, size_t *len, int *sig, waiting *w) {
  for (;;) {
    int left = dtr__ms_left(deadline);
    dtr_result rc;
    if (left == 0) {
      rc = dtr_store_try_get(c, key, val, len);
      return rc == DTR_ERR_NOT_FOUND ? DTR_ERR_TIMEOUT : rc;
    }
    int slice = (left < 0 || left > SLICE_MS) ? SLICE_MS : left;
    rc = dtr_store_get(c, key, slice, val, len);
    if (rc == DTR_ERR_TIMEOUT && !dtr__store_connected(c))
      return DTR_ERR_CONNECTION; /* no answer at all: the store is lost, not the deadline passed */
    if (rc != DTR_ERR_TIMEOUT) return rc;
    if (cfg->interrupted && (*sig = cfg->interrupted(cfg->ctx)) != 0) return DTR_ERR_ABORTED;
    say_waiting(w, deadline);
  }
}

static dtr_result store_fail(dtr_store *c, dtr_result rc, const char *what, char *err, size_t cap) {
  return dtr__fail(err, cap, rc, "%s: %s (%s)", what, dtr_strerror(rc), dtr_store_last_error(c));
}

void dtr__rdzv_result_free(dtr__rdzv_result *r) {
  free(r->hosts);
  r->hosts = NULL;
}

dtr_result dtr__rdzv_join(dtr_store *c, const dtr__rdzv_cfg *cfg, int round, dtr__rdzv_result *out, char *err,
                          size_t cap) {
  memset(out, 0, sizeof *out);
  out->standby_rank = -1;
  int64_t deadline = dtr__now_ms() + cfg->timeout_ms;
  char key[DTR_STORE_MAX_KEY];
  dtr__node_info me;
  memset(&me, 0, sizeof me);
  snprintf(me.host, sizeof me.host, "%s", cfg->hostname);
  snprintf(me.addr, sizeof me.addr, "%s", dtr_store_local_addr(c));
  me.nproc = cfg->nproc;
  me.want_rank = cfg->want_rank;
  me.pid = (int)getpid();
  me.prev_rank = cfg->prev_rank;
  snprintf(me.store, sizeof me.store, "%s", cfg->store ? cfg->store : "");
  me.primary = cfg->primary;
  snprintf(out->my_addr, sizeof out->my_addr, "%s", me.addr);
  dtr__node_info *nodes = NULL;
  int *ranks = NULL;
  dtr_result rc;
  int sig = 0;
  void *val = NULL;
  size_t len;
  int n = 0, idx = 0;

  for (int hops = 0;; hops++, round++) {
    if (hops > 100000) return dtr__fail(err, cap, DTR_ERR_INTERNAL, "rendezvous: no open round found");
    int64_t v;
    dtr__rdzv_key(key, sizeof key, cfg->run_id, round, "count");
    if ((rc = dtr_store_add(c, key, 1, &v)) != DTR_OK)
      return store_fail(c, rc, "rendezvous: joining", err, cap);
    idx = (int)(v - 1);
    me.idx = idx;
    char info[1100];
    int il = dtr__node_info_format(&me, info, sizeof info);
    char sfx[64];
    snprintf(sfx, sizeof sfx, "node/%d", idx);
    dtr__rdzv_key(key, sizeof key, cfg->run_id, round, sfx);
    if ((rc = dtr_store_set(c, key, info, (size_t)il)) != DTR_OK)
      return store_fail(c, rc, "rendezvous: publishing this node", err, cap);

    if (idx == 0) { /* leader: wait for the others, then close */
      int next = 1;
      int64_t last_call = -1;
      /* after a failure, a majority of the last round (see rendezvous.h), whatever MIN says */
      int quorum = dtr__rdzv_quorum(cfg->prev_size, !cfg->failed_over);
      int need = quorum > cfg->nnodes_min ? quorum : cfg->nnodes_min;
      int64_t qdeadline = quorum > 0 ? dtr__now_ms() + cfg->quorum_timeout_ms : -1;
      waiting w = {cfg, dtr__now_ms(), 0, ""};
      while (next < cfg->nnodes_max) {
        if (next >= need && last_call < 0) {
          int wait_more = (cfg->prev_size > 0 && next >= cfg->prev_size) ? 0 : cfg->last_call_ms;
          last_call = dtr__now_ms() + wait_more;
        }
        int64_t until = next >= need ? last_call : deadline;
        if (next < quorum && qdeadline >= 0 && (until < 0 || qdeadline < until)) until = qdeadline;
        snprintf(w.what, sizeof w.what, "nodes to join round %d of run %s: %d here, %d needed%s", round,
                 cfg->run_id, next, need, quorum > cfg->nnodes_min ? " (a majority of the last round)" : "");
        snprintf(sfx, sizeof sfx, "node/%d", next);
        dtr__rdzv_key(key, sizeof key, cfg->run_id, round, sfx);
        rc = wait_get(c, cfg, key, until, &val, &len, &sig, &w);
        free(val);
        val = NULL;
        if (rc == DTR_OK) {
          next++;
        } else if (rc == DTR_ERR_TIMEOUT && next >= need) {
          break;
        } else if (rc == DTR_ERR_TIMEOUT && next < quorum && dtr__ms_left(qdeadline) == 0) {
          /* a minority: close the round as such, so that every agent in it stops too */
          int swapped = 0;
          dtr__rdzv_key(key, sizeof key, cfg->run_id, round, "closed");
          (void)dtr_store_cas(c, key, NULL, 0, "-1", 2, &swapped, NULL, NULL);
          out->minority = 1;
          return dtr__fail(
              err, cap, DTR_ERR_TIMEOUT,
              "only %d of the %d nodes of the last round came back within %.0f s: this side is a "
              "minority (a network partition, or more than half the nodes lost at once)",
              next, cfg->prev_size, cfg->quorum_timeout_ms / 1000.0);
        } else if (rc == DTR_ERR_TIMEOUT) {
          return dtr__fail(err, cap, DTR_ERR_TIMEOUT,
                           "rendezvous timed out after %.0f s: %d of the %d nodes needed joined (run id %s)",
                           cfg->timeout_ms / 1000.0, next, need, cfg->run_id);
        } else if (rc == DTR_ERR_ABORTED) {
          out->interrupted_by = sig;
          return dtr__fail(err, cap, rc, "rendezvous interrupted by signal %d", sig);
        } else {
          return store_fail(c, rc, "rendezvous: waiting for nodes", err, cap);
        }
      }
      char num[16];
      int nl = snprintf(num, sizeof num, "%d", next);
      dtr__rdzv_key(key, sizeof key, cfg->run_id, round, "closed");
      int swapped = 0;
      if ((rc = dtr_store_cas(c, key, NULL, 0, num, (size_t)nl, &swapped, NULL, NULL)) != DTR_OK)
        return store_fail(c, rc, "rendezvous: closing the round", err, cap);
    }
    dtr__rdzv_key(key, sizeof key, cfg->run_id, round, "closed");
    waiting wc = {cfg, dtr__now_ms(), 0, ""};
    snprintf(wc.what, sizeof wc.what, "round %d of run %s to close (its first node decides)", round,
             cfg->run_id);
    rc = wait_get(c, cfg, key, deadline, &val, &len, &sig, &wc);
    if (rc == DTR_ERR_TIMEOUT)
      return dtr__fail(
          err, cap, DTR_ERR_TIMEOUT,
          "rendezvous timed out after %.0f s waiting for round %d of run %s to close (fewer than %d "
          "nodes joined?)",
          cfg->timeout_ms / 1000.0, round, cfg->run_id, cfg->nnodes_min);
    if (rc == DTR_ERR_ABORTED) {
      out->interrupted_by = sig;
      return dtr__fail(err, cap, rc, "rendezvous interrupted by signal %d", sig);
    }
    if (rc) return store_fail(c, rc, "rendezvous: waiting for the round to close", err, cap);
    n = atoi(val);
    free(val);
    val = NULL;
    if (n == -1) {
      out->minority = 1;
      return dtr__fail(
          err, cap, DTR_ERR_TIMEOUT,
          "round %d of run %s closed without a majority of the last round: this side is a minority", round,
          cfg->run_id);
    }
    if (n < 1 || n > (1 << 20))
      return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "rendezvous: round %d closed with %d nodes", round, n);
    if (idx < n) break;
    DTR_INFO("round %d of run %s already started without this node; waiting for the next one", round,
             cfg->run_id);
    dtr__rdzv_key(key, sizeof key, cfg->run_id, round, "late");
    (void)dtr_store_add(c, key, 1, &v);
  }

  out->round = round;
  nodes = calloc((size_t)n, sizeof *nodes);
  ranks = calloc((size_t)n, sizeof *ranks);
  out->hosts = calloc((size_t)n, sizeof *out->hosts);
  if (!nodes || !ranks || !out->hosts) {
    rc = DTR_ERR_NOMEM;
    goto fail;
  }
  for (int i = 0; i < n; i++) {
    char sfx[64];
    snprintf(sfx, sizeof sfx, "node/%d", i);
    dtr__rdzv_key(key, sizeof key, cfg->run_id, round, sfx);
    rc = wait_get(c, cfg, key, deadline, &val, &len, &sig, NULL);
    if (rc) {
      rc = store_fail(c, rc, "rendezvous: reading the nodes", err, cap);
      goto fail;
    }
    rc = dtr__node_info_parse(val, len, &nodes[i]);
    free(val);
    val = NULL;
    if (rc) {
      rc = dtr__fail(err, cap, DTR_ERR_PROTOCOL, "rendezvous: node %d of round %d published malformed info",
                     i, round);
      goto fail;
    }
    nodes[i].idx = i;
  }
  for (int i = 0; i < n; i++)
    if (nodes[i].nproc != nodes[0].nproc) {
      rc = dtr__fail(
          err, cap, DTR_ERR_INVALID,
          "node %s (pid %d) runs --nproc-per-node %d but node %s (pid %d) runs %d; it must match on "
          "every node",
          nodes[i].host, nodes[i].pid, nodes[i].nproc, nodes[0].host, nodes[0].pid, nodes[0].nproc);
      goto fail;
    }
  if ((rc = dtr__rdzv_assign(nodes, n, ranks, err, cap)) != DTR_OK) goto fail;
  out->nnodes = n;
  out->node_rank = ranks[idx];
  out->nproc = cfg->nproc;
  out->world_size = n * cfg->nproc;
  for (int i = 0; i < n; i++) snprintf(out->hosts[ranks[i]], sizeof out->hosts[0], "%s", nodes[i].host);
  /* the standby: the first node in rank order that can serve and does not hold the primary */
  out->standby_rank = -1;
  for (int r = 0; r < n && out->standby_rank < 0; r++)
    for (int i = 0; i < n; i++)
      if (ranks[i] == r && nodes[i].store[0] && !nodes[i].primary) {
        out->standby_rank = r;
        snprintf(out->standby, sizeof out->standby, "%s", nodes[i].store);
      }

  dtr__rdzv_key(key, sizeof key, cfg->run_id, round, "master");
  if (out->node_rank == 0) {
    const char *addr = me.addr;
    if (cfg->master_addr && cfg->master_addr[0] && dtr__host_is_local(cfg->master_addr))
      addr = cfg->master_addr;
    int port = 0;
    char perr[256];
    if (dtr__find_free_port(addr, &port, perr, sizeof perr) != DTR_OK &&
        dtr__find_free_port("", &port, perr, sizeof perr) != DTR_OK) {
      rc = dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot find a free port for MASTER_PORT: %s", perr);
      goto fail;
    }
    char mv[320];
    int ml = strchr(addr, ':') ? snprintf(mv, sizeof mv, "[%s]:%d", addr, port)
                               : snprintf(mv, sizeof mv, "%s:%d", addr, port);
    if ((rc = dtr_store_set(c, key, mv, (size_t)ml)) != DTR_OK) {
      rc = store_fail(c, rc, "rendezvous: publishing MASTER_ADDR", err, cap);
      goto fail;
    }
    snprintf(out->master_addr, sizeof out->master_addr, "%s", addr);
    out->master_port = port;
  } else {
    rc = wait_get(c, cfg, key, deadline, &val, &len, &sig, NULL);
    if (rc == DTR_ERR_ABORTED) out->interrupted_by = sig;
    if (rc) {
      rc = store_fail(c, rc, "rendezvous: waiting for node 0's MASTER_ADDR", err, cap);
      goto fail;
    }
    char perr[128];
    if (dtr__parse_hostport(val, out->master_addr, sizeof out->master_addr, &out->master_port, perr,
                            sizeof perr)) {
      rc = dtr__fail(err, cap, DTR_ERR_PROTOCOL, "rendezvous: bad master address '%s'", (char *)val);
      goto fail;
    }
    free(val);
    val = NULL;
  }
  free(nodes);
  free(ranks);
  return DTR_OK;
fail:
  free(val);
  free(nodes);
  free(ranks);
  dtr__rdzv_result_free(out);
  return rc;
}
