/* The host backend's shared-memory segment: the ranks check through the store that they share a node
 * (boot id, hostname, IPC namespace), rank 0 creates and sizes the segment, everyone maps it, and rank 0
 * unlinks its name as soon as all have mapped it. A crash before that cannot leak the name for long:
 * every attached rank holds a lock on the segment (rank 0 from the moment it creates it), a rank that
 * gives up while rank 0 is dead unlinks the name itself, and every creator first removes the dtrain
 * names in /dev/shm that no live process holds a lock on (left by a job that died whole).
 * Ranks on several nodes connect through comm_host_tcp.c instead; when the nodes hold equal blocks of
 * ranks, comm_host_hier.c adds one segment per node (built here, by dtr__host_segment_setup). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "collectives/comm_host_internal.h"
#include "collectives/comm_host_tcp.h"
#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/param.h"

#define ALIGN_UP(x, a) (((x) + (a)-1) / (a) * (a))

static void read_line(const char *path, char *out, size_t cap) {
  out[0] = 0;
  FILE *f = fopen(path, "r");
  if (!f) return;
  if (!fgets(out, (int)cap, f)) out[0] = 0;
  fclose(f);
  out[strcspn(out, "\n")] = 0;
}

/* "host=<name> boot=<id> ipc=<ns>": equal strings mean the ranks can share POSIX shared memory. */
static void host_identity(char *out, size_t cap, char *hostname, size_t hcap) {
  char boot[64], ipc[64];
  read_line("/proc/sys/kernel/random/boot_id", boot, sizeof boot);
  if (gethostname(hostname, hcap) != 0) snprintf(hostname, hcap, "?");
  hostname[hcap - 1] = 0;
  ssize_t k = readlink("/proc/self/ns/ipc", ipc, sizeof ipc - 1);
  ipc[k > 0 ? k : 0] = 0;
  snprintf(out, cap, "host=%s boot=%s ipc=%s", hostname, boot, ipc);
}

static dtr_result store_get_str(dtr_comm *c, const char *key, int64_t deadline, char **val) {
  size_t len;
  int left = dtr__ms_left(deadline);
  dtr_result rc = dtr_store_get(c->store, key, left < 1 ? 1 : left, (void **)val, &len);
  if (rc == DTR_ERR_TIMEOUT)
    return dtr__comm_fail(c, rc,
                          "host backend init: key %s did not appear within %d ms (a rank did not call "
                          "dtr_comm_create?)",
                          key, c->timeout_ms);
  if (rc)
    return dtr__comm_fail(c, rc, "host backend init: store get %s: %s", key, dtr_store_last_error(c->store));
  return DTR_OK;
}

static dtr_result store_set_str(dtr_comm *c, const char *key, const char *val) {
  dtr_result rc = dtr_store_set(c->store, key, val, strlen(val));
  if (rc)
    return dtr__comm_fail(c, rc, "host backend init: store set %s: %s", key, dtr_store_last_error(c->store));
  return DTR_OK;
}

static void layout(dtr__host_hdr *hd, int n) {
  size_t off = 4096;
  hd->off_ctl = off;
  off = ALIGN_UP(off + (size_t)n * sizeof(dtr__host_ctl), 4096);
  hd->off_chan = off;
  off = ALIGN_UP(off + (size_t)n * (size_t)n * sizeof(dtr__host_chan), 4096);
  hd->off_slots = off;
  off = ALIGN_UP(off + 2 * (size_t)n * hd->slot_bytes, 4096);
  hd->off_rings = off;
  off = ALIGN_UP(off + (size_t)n * (size_t)n * hd->ring_bytes, 4096);
  hd->off_eager = off;
  off = ALIGN_UP(off + (size_t)n * DTR__HOST_EAGER * hd->eager_bytes, 4096);
  hd->total_bytes = off;
}

/* Lock byte j of the segment open on fd (this rank's liveness lock; see dtr__host_peer_alive). */
static int lock_byte(int fd, int j) {
  return dtr__host_lock(fd, j, 1, F_OFD_SETLK);
}

/* Remove the names of dead segments: "dtrain.<pid>.<16 hex>.lk" in /dev/shm that no process holds a
 * lock on. Every rank locks its byte while attached and rank 0 from the moment it creates the name (the
 * ".lk" suffix promises that), so an unlocked segment was left by ranks that all died before its name
 * was unlinked. The one gap, a creator between shm_open and its lock (microseconds), shows as an empty
 * file: those are left alone unless older than a minute. Names without the suffix come from older
 * versions, whose rank 0 locked only after publishing the name: they go once ten minutes old. Segments
 * of other users cannot be opened and are skipped. */
static void remove_stale(void) {
  DIR *d = opendir("/dev/shm");
  if (!d) return;
  struct dirent *e;
  int removed = 0;
  while ((e = readdir(d)) != NULL) {
    int pid = 0, used = 0;
    char hex[17];
    if (sscanf(e->d_name, "dtrain.%d.%16[0-9a-f]%n", &pid, hex, &used) != 2 || strlen(hex) != 16) continue;
    const int legacy = strcmp(e->d_name + used, "") == 0;
    if (!legacy && strcmp(e->d_name + used, ".lk") != 0) continue;
    char name[300];
    snprintf(name, sizeof name, "/%s", e->d_name);
    int fd = shm_open(name, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) continue;
    struct stat st;
    int unlocked = dtr__host_lock(fd, 0, 0, F_OFD_GETLK) == 0; /* length 0: the whole file */
    int old = fstat(fd, &st) == 0 &&
              (legacy ? st.st_ctime + 600 < time(NULL) : st.st_size > 0 || st.st_ctime + 60 < time(NULL));
    if (unlocked && old && shm_unlink(name) == 0) removed++;
    close(fd);
  }
  closedir(d);
  if (removed) DTR_INFO("host backend: removed %d stale shared-memory segment(s) left by dead jobs", removed);
}

/* DTRAIN_HOST_TEST_CRASH=created|published (tests only): the segment's rank 0 kills itself with
 * SIGKILL right after creating the segment, or after publishing its name, before the others mapped it
 * (the moments when its name is in /dev/shm with nobody yet to unlink it). Says which name first. */
static void test_crash(const dtr__host *h, const char *when) {
  const char *v = dtr__param_str("DTRAIN_HOST_TEST_CRASH", "");
  if (h->r != 0 || !v || strcmp(v, when) != 0) return;
  fprintf(stderr, "dtrain: DTRAIN_HOST_TEST_CRASH=%s: rank 0 (pid %d) dies holding segment %s\n", when,
          (int)getpid(), h->shm_name);
  fflush(stderr);
  raise(SIGKILL);
}

static dtr_result create_segment(dtr_comm *c, dtr__host *h) {
  remove_stale();
  uint64_t rnd = 0;
  if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) rnd = (uint64_t)dtr__now_ms() * 2654435761u;
  snprintf(h->shm_name, sizeof h->shm_name, "/dtrain.%d.%016llx.lk", (int)getpid(), (unsigned long long)rnd);
  dtr__host_hdr hd;
  memset(&hd, 0, sizeof hd);
  hd.magic = DTR__HOST_MAGIC;
  hd.version = DTR__HOST_VERSION;
  hd.nranks = (uint32_t)h->n;
  /* 4 MiB per rank and buffer, less beyond 16 ranks so the slots stay within 128 MiB. */
  int64_t slot = ((int64_t)64 << 20) / h->n;
  if (slot > (4 << 20)) slot = 4 << 20;
  if (slot < (256 << 10)) slot = 256 << 10;
  hd.slot_bytes =
      ALIGN_UP((size_t)dtr__param_range("DTRAIN_SHM_SLOT_BYTES", slot, 4096, (int64_t)1 << 30), 4096);
  /* All-reduce chunk: its working set (n slots of a chunk) should stay in cache while the next chunk
   * is copied in. Measured on 2 cores (64 MiB, streaming stores on): 4 ranks best at 512 KiB-1 MiB
   * (2 MiB: -20%); 2 ranks, since the reduce writes straight to the result, 1 MiB against 2 MiB:
   * +40-60% at 2-4 MiB (the working set of one chunk then stays in cache), within noise to +10% at
   * 16-256 MiB; so 4 MiB / n, at most 1 MiB. */
  int64_t chunk = ((int64_t)4 << 20) / h->n;
  if (chunk > (1 << 20)) chunk = 1 << 20;
  if (chunk < (128 << 10)) chunk = 128 << 10;
  hd.chunk_bytes =
      ALIGN_UP((size_t)dtr__param_range("DTRAIN_SHM_CHUNK_BYTES", chunk, 4096, (int64_t)1 << 30), 4096);
  if (hd.chunk_bytes > hd.slot_bytes) hd.chunk_bytes = hd.slot_bytes;
  /* Rank 0 decides for all: ranks that cut chunks differently would reduce some elements twice. */
  hd.balance = dtr__param_int("DTRAIN_SHM_BALANCE", 1) != 0;
  /* DTRAIN_HOST_TEST_STEP0 (tests only): start every step counter here instead of at 0, so that a short
   * job crosses the counters' wrap, and sees buffers whose last release (0, never used) lies 2^31 or
   * more steps back (test_coll_host.sh). */
  hd.step0 = (uint32_t)dtr__param_range("DTRAIN_HOST_TEST_STEP0", 0, 0, UINT32_MAX);
  hd.small_bytes = (size_t)dtr__param_range("DTRAIN_SHM_SMALL_BYTES", 16 << 10, 0, (int64_t)1 << 30);
  if (hd.small_bytes > hd.slot_bytes) hd.small_bytes = hd.slot_bytes;
  /* Broadcasts up to the latency path's size, at most 64 KiB, go through eager entries, so that a
   * root need not wait for the readers of its last call (comm_host_coll.c). */
  hd.eager_bytes = ALIGN_UP(hd.small_bytes < (64 << 10) ? hd.small_bytes : (64 << 10), 64);
  /* The unpipelined collectives (copy into the slot, one sync, copy out) go in rounds of this many
   * bytes per rank, so that what a rank wrote is still in its cache when the others copy it out.
   * Measured on 2 cores, 1-64 MiB, interleaved against whole 4 MiB slots: 512 KiB gave 2 ranks
   * all-gather, all-to-all and reduce-scatter 2-2.5x at 4-16 MiB and 1.3-1.6x at 64 MiB, broadcast
   * 2.5-3.5x; 4 ranks +20-80%; 1 MiB lost half of it for all-gather and broadcast (2 ranks), 256 KiB
   * a little everywhere. 8 ranks on 2 cores: within their noise. */
  hd.round_bytes =
      ALIGN_UP((size_t)dtr__param_range("DTRAIN_SHM_ROUND_BYTES", 512 << 10, 4096, (int64_t)1 << 30), 4096);
  if (hd.round_bytes > hd.slot_bytes) hd.round_bytes = hd.slot_bytes;
  /* p2p rings: 256 KiB per ordered pair, less on big nodes (at most 64 MiB in all). */
  size_t ring = (size_t)dtr__param_range("DTRAIN_SHM_RING_BYTES", 256 << 10, 4096, (int64_t)1 << 30);
  while (ring > 4096 && (size_t)h->n * (size_t)h->n * ring > ((size_t)64 << 20)) ring /= 2;
  hd.ring_bytes = ALIGN_UP(ring, 4096);
  layout(&hd, h->n);

  h->fd = shm_open(h->shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (h->fd < 0)
    return dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: shm_open(%s): %s", h->shm_name, strerror(errno));
  /* At once, so that remove_stale of another job never takes a live segment for a dead one. */
  if (lock_byte(h->fd, 0) != 0)
    return dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: rank 0 cannot lock its byte of %s: %s",
                          h->shm_name, strerror(errno));
  if (ftruncate(h->fd, (off_t)hd.total_bytes) != 0)
    return dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: ftruncate(%s, %llu): %s", h->shm_name,
                          (unsigned long long)hd.total_bytes, strerror(errno));
  h->map_bytes = hd.total_bytes;
  h->base = mmap(NULL, h->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, h->fd, 0);
  if (h->base == MAP_FAILED) {
    h->base = NULL;
    return dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: mmap %llu bytes of %s: %s",
                          (unsigned long long)hd.total_bytes, h->shm_name, strerror(errno));
  }
  memcpy(h->base, &hd, sizeof hd);
  dtr__host_ctl *ctl = (dtr__host_ctl *)(h->base + hd.off_ctl);
  for (int j = 0; j < h->n; j++) atomic_store(&ctl[j].step, (uint32_t)hd.step0);
  return DTR_OK;
}

static dtr_result open_segment(dtr_comm *c, dtr__host *h) {
  h->fd = shm_open(h->shm_name, O_RDWR | O_CLOEXEC, 0600);
  if (h->fd < 0)
    return dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: rank %d cannot open rank 0's segment %s: %s",
                          h->r, h->shm_name, strerror(errno));
  struct stat st;
  if (fstat(h->fd, &st) != 0 || (size_t)st.st_size < 4096)
    return dtr__comm_fail(c, DTR_ERR_PROTOCOL, "host backend: segment %s is too small", h->shm_name);
  h->map_bytes = (size_t)st.st_size;
  h->base = mmap(NULL, h->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, h->fd, 0);
  if (h->base == MAP_FAILED) {
    h->base = NULL;
    return dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: mmap %zu bytes of %s: %s", h->map_bytes,
                          h->shm_name, strerror(errno));
  }
  const dtr__host_hdr *hd = (const dtr__host_hdr *)h->base;
  if (hd->magic != DTR__HOST_MAGIC || hd->version != DTR__HOST_VERSION || hd->nranks != (uint32_t)h->n ||
      hd->total_bytes != h->map_bytes)
    return dtr__comm_fail(c, DTR_ERR_PROTOCOL,
                          "host backend: segment %s is not a version-%u segment for %d ranks (magic %llx, "
                          "version %u, %u ranks)",
                          h->shm_name, DTR__HOST_VERSION, h->n, (unsigned long long)hd->magic, hd->version,
                          hd->nranks);
  return DTR_OK;
}

static dtr_result attach(dtr_comm *c, dtr__host *h) {
  h->hdr = (dtr__host_hdr *)h->base;
  h->ctl = (dtr__host_ctl *)(h->base + h->hdr->off_ctl);
  h->chan = (dtr__host_chan *)(h->base + h->hdr->off_chan);
  h->slots = h->base + h->hdr->off_slots;
  h->rings = h->base + h->hdr->off_rings;
  h->eager = h->base + h->hdr->off_eager;
  h->slot_bytes = h->hdr->slot_bytes;
  h->chunk_bytes = h->hdr->chunk_bytes;
  h->small_bytes = h->hdr->small_bytes;
  h->round_bytes = h->hdr->round_bytes;
  h->eager_bytes = h->hdr->eager_bytes;
  h->step = (uint32_t)h->hdr->step0;
  h->ring_bytes = h->hdr->ring_bytes;
  h->balance = h->hdr->balance != 0;
  /* DTRAIN_HOST_TEST_SLOW_REDUCE=k (tests only): this process's reduces take k times as long, as on a
   * core k times slower at them; test_coll_balance.sh sets it on one rank. */
  h->slow_reduce = (int)dtr__param_range("DTRAIN_HOST_TEST_SLOW_REDUCE", 1, 1, 100);
  h->cut = calloc((size_t)h->n + 1, sizeof *h->cut);
  if (!h->cut) return dtr__comm_fail(c, DTR_ERR_NOMEM, "host backend: %d piece cuts", h->n + 1);
  dtr__host_share_even(h->cut, h->n);
  h->ctl[h->r].pid = (int32_t)getpid();
  /* Our liveness lock: held until this description is closed (destroy or process exit). */
  if (lock_byte(h->fd, h->r) != 0)
    return dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: rank %d cannot lock its byte of %s: %s", h->r,
                          h->shm_name, strerror(errno));
  return DTR_OK;
}

/* The CPUs this process may run on. */
static int cpus_usable(void) {
  cpu_set_t set;
  int cpus = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus <= 0) cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
  return cpus;
}

/* DTRAIN_HOST_FAKE_NODES=k (tests, benchmarks; every rank sets it): the ranks of the root communicator
 * count as k nodes of size/k contiguous ranks each, as if their node ids differed. A communicator's
 * ranks are placed by their rank in the root communicator, so split children see the same nodes. */
static void fake_node(const dtr_comm *c, char *id, size_t cap) {
  int64_t k = dtr__param_int("DTRAIN_HOST_FAKE_NODES", 0);
  if (k <= 1) return;
  const dtr_comm *root = c;
  while (root->parent) root = root->parent;
  if (root->size % k != 0 || !c->world_ranks) {
    DTR_WARN("DTRAIN_HOST_FAKE_NODES=%lld does not divide the root communicator's %d ranks: ignored",
             (long long)k, root->size);
    return;
  }
  int node = c->world_ranks[c->rank] / (int)(root->size / k);
  size_t len = strlen(id);
  snprintf(id + len, cap - len, " fake=%d", node);
}

/* The segment of the h->n ranks h->r belongs to, keys under kp. */
dtr_result dtr__host_segment_setup(dtr_comm *c, dtr__host *h, const char *kp, int64_t deadline) {
  dtr_result rc = DTR_OK;
  char key[DTR_STORE_MAX_KEY], *val = NULL;
  /* Rank 0 creates the segment and publishes its name (or why it could not). */
  snprintf(key, sizeof key, "%sseg", kp);
  if (h->r == 0) {
    rc = create_segment(c, h);
    if (rc) {
      char msg[1100];
      snprintf(msg, sizeof msg, "!%s", c->err);
      store_set_str(c, key, msg);
      if (h->fd >= 0) shm_unlink(h->shm_name);
      h->unlinked = 1;
      return rc;
    }
    test_crash(h, "created");
    DTR_CHECK_GOTO(store_set_str(c, key, h->shm_name), rc, fail);
    test_crash(h, "published");
  } else {
    DTR_CHECK(store_get_str(c, key, deadline, &val));
    if (val[0] == '!') {
      rc =
          dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: rank 0 could not create the segment: %s", val + 1);
      free(val);
      return rc;
    }
    snprintf(h->shm_name, sizeof h->shm_name, "%s", val);
    free(val);
    val = NULL;
    h->unlinked = 1; /* rank 0's job */
    rc = open_segment(c, h);
  }
  if (rc == DTR_OK) rc = attach(c, h);

  /* Everyone reports whether it mapped the segment; then rank 0 removes its name. */
  snprintf(key, sizeof key, "%smapped/%d", kp, h->r);
  if (rc == DTR_OK) {
    DTR_CHECK_GOTO(store_set_str(c, key, "ok"), rc, fail);
  } else {
    char msg[1100];
    snprintf(msg, sizeof msg, "!%s", c->err);
    store_set_str(c, key, msg);
    goto fail;
  }
  for (int j = 0; j < h->n; j++) {
    snprintf(key, sizeof key, "%smapped/%d", kp, j);
    DTR_CHECK_GOTO(store_get_str(c, key, deadline, &val), rc, fail);
    if (val[0] == '!') {
      rc = dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend: rank %d could not attach: %s", j, val + 1);
      free(val);
      goto fail;
    }
    free(val);
    val = NULL;
  }
  if (h->r == 0 && !h->unlinked) {
    shm_unlink(h->shm_name);
    h->unlinked = 1;
  }
  /* Results of all-reduces from this size up are written to recv with streaming stores (measured +40%
   * busbw at 64-256 MiB: no read-for-ownership of a destination that would not stay in cache). */
  h->stream_bytes = (size_t)dtr__param_int("DTRAIN_SHM_STREAM_BYTES", 8 << 20);
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2")) h->stream_bytes = 0;
#endif
  int cpus = cpus_usable();
  h->stream_in = h->n <= cpus; /* see pipelined in comm_host_coll.c */
  /* Polls before yielding. Long spins only pay when every rank owns a core and nothing else runs; on
   * this kind of machine (2 cores, ranks >= cores, builds and tests beside us) a spinning rank steals
   * the core from the one it waits for: measured 2 ranks, 64 MiB all-reduce 0.5-0.7 GB/s with 20000
   * polls, 1.9-2.7 GB/s with 32, under the same background load. */
  h->spin = (int)dtr__param_int("DTRAIN_SHM_SPIN", h->n * 2 <= cpus ? 2000 : 32);
  if (h->spin < 0) h->spin = 0;
  /* Then yield: on an oversubscribed node the rank we wait for is often runnable on our own core, and
   * sched_yield hands it the core without the futex round trip (measured: 8-byte all-reduce with 4
   * ranks on 2 cores 27 us with futex only, 5-8 us with yields). */
  h->yields = (int)dtr__param_int("DTRAIN_SHM_YIELDS", 100);
  if (h->yields < 0) h->yields = 0;
  DTR_DEBUG(
      "host backend: rank %d/%d attached %s (%zu bytes, slot %zu, chunk %zu, small %zu, round %zu, ring %zu, "
      "spin %d)",
      h->r, h->n, h->shm_name, h->map_bytes, h->slot_bytes, h->chunk_bytes, h->small_bytes, h->round_bytes,
      h->ring_bytes, h->spin);
  return DTR_OK;
fail:
  if (h->r == 0 && !h->unlinked && h->shm_name[0]) {
    shm_unlink(h->shm_name);
    h->unlinked = 1;
  }
  /* Rank 0 died before it could unlink the name (its lock is gone): we are the ones left to do it. A
   * live rank 0 keeps that job, so that ranks still opening the segment can report their own error. */
  if (h->r != 0 && h->fd >= 0 && h->shm_name[0] && !dtr__host_peer_alive(h, 0)) {
    if (shm_unlink(h->shm_name) == 0)
      DTR_DEBUG("host backend: rank %d removed segment %s: rank 0 died before it could", h->r, h->shm_name);
  }
  return rc;
}

static dtr_result init_impl(dtr_comm *c) {
  dtr_result rc = DTR_OK;
  char key[DTR_STORE_MAX_KEY], kp[600], id[512], hostname[256], **ids = NULL;
  int64_t deadline = dtr__now_ms() + (c->timeout_ms > 0 ? c->timeout_ms : DTR_COMM_DEFAULT_TIMEOUT_MS);
  dtr__host *h = calloc(1, sizeof *h);
  if (!h) return dtr__comm_fail(c, DTR_ERR_NOMEM, "host backend: out of memory");
  h->n = c->size;
  h->r = c->rank;
  h->fd = -1;
  c->impl = h;
  if (!c->store)
    return dtr__comm_fail(c, DTR_ERR_INVALID, "host backend: a store is needed to find the other ranks");

  /* A generation number keeps keys apart when a communicator of the same name is created again. */
  int64_t v;
  snprintf(key, sizeof key, "%shost/gen", c->prefix);
  rc = dtr_store_add(c->store, key, 1, &v);
  if (rc)
    return dtr__comm_fail(c, rc, "host backend init: store add %s: %s", key, dtr_store_last_error(c->store));
  snprintf(kp, sizeof kp, "%shost/%lld/", c->prefix, (long long)((v - 1) / h->n));

  /* Same node? Every rank reads every rank's identity, so every rank takes the same branch below. */
  host_identity(id, sizeof id, hostname, sizeof hostname);
  fake_node(c, id, sizeof id);
  snprintf(key, sizeof key, "%sid/%d", kp, h->r);
  DTR_CHECK(store_set_str(c, key, id));
  ids = calloc((size_t)h->n, sizeof *ids);
  if (!ids) return dtr__comm_fail(c, DTR_ERR_NOMEM, "host backend: out of memory");
  int multi = 0; /* the first rank on another node than rank 0's */
  for (int j = 0; j < h->n && rc == DTR_OK; j++) {
    snprintf(key, sizeof key, "%sid/%d", kp, j);
    rc = store_get_str(c, key, deadline, &ids[j]);
    if (rc == DTR_OK && !multi && j > 0 && strcmp(ids[j], ids[0]) != 0) multi = j;
  }
  if (rc) goto out;
  /* DTRAIN_HOST_TRANSPORT=tcp forces TCP on one node too (tests, benchmarks; every rank must set it). */
  const char *force = dtr__param_str("DTRAIN_HOST_TRANSPORT", "auto");
  if (!multi && force && strcmp(force, "tcp") == 0) {
    DTR_DEBUG("host backend: DTRAIN_HOST_TRANSPORT=tcp: TCP transport on one node");
    rc = dtr__host_tcp_init(c, kp, deadline, &h->tcp);
    goto out;
  }
  if (multi) {
    char h0[256], hj[256], *e;
    const char *p0 = strstr(ids[0], "host="), *pj = strstr(ids[multi], "host=");
    snprintf(h0, sizeof h0, "%s", p0 ? p0 + 5 : "?");
    snprintf(hj, sizeof hj, "%s", pj ? pj + 5 : "?");
    if ((e = strchr(h0, ' '))) *e = 0;
    if ((e = strchr(hj, ' '))) *e = 0;
    DTR_DEBUG("host backend: ranks 0 and %d are on different nodes (host %s, host %s): TCP transport", multi,
              h0, hj);
    rc = dtr__host_tcp_init(c, kp, deadline, &h->tcp);
    if (rc == DTR_OK) rc = dtr__host_hier_init(c, h, ids, kp, deadline);
    goto out;
  }
  rc = dtr__host_segment_setup(c, h, kp, deadline);
out:
  for (int j = 0; ids && j < h->n; j++) free(ids[j]);
  free(ids);
  return rc;
}

dtr_result dtr__host_init(dtr_comm *c) {
  dtr_result rc = init_impl(c);
  if (rc != DTR_OK) dtr__host_destroy(c); /* leaves c->impl NULL; destroy after this is harmless */
  return rc;
}

void dtr__host_segment_abort(dtr__host *h) {
  if (!h || !h->ctl) return;
  atomic_store(&h->ctl[h->r].aborted, 1);
  /* Wake whatever anyone sleeps on: our own waits (on peers' words) and the peers' waits on us. */
  for (int j = 0; j < h->n; j++) {
    dtr__host_futex_wake(&h->ctl[j].step);
    dtr__host_futex_wake(&h->ctl[j].bell);
  }
}

void dtr__host_abort(dtr_comm *c) {
  dtr__host *h = c ? c->impl : NULL;
  if (!h) return;
  dtr__host_segment_abort(h);
  dtr__host_hier_abort(h); /* the node segment of a hierarchical communicator; TCP waits poll c->aborted */
}

void dtr__host_segment_release(dtr__host *h) {
  if (h->r == 0 && !h->unlinked && h->shm_name[0]) shm_unlink(h->shm_name);
  if (h->base) munmap(h->base, h->map_bytes);
  if (h->fd >= 0) close(h->fd); /* drops our liveness lock */
  free(h->cut);
  h->cut = NULL;
  h->base = NULL;
  h->ctl = NULL;
  h->fd = -1;
}

void dtr__host_destroy(dtr_comm *c) {
  dtr__host *h = c ? c->impl : NULL;
  if (!h) return;
  dtr__host_hier_destroy(h);
  dtr__host_tcp_destroy(h->tcp);
  dtr__host_segment_release(h);
  free(h);
  c->impl = NULL;
}
