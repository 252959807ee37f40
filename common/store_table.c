/* The store server's key table (see store_table.h): chained hashing with power-of-two buckets that
 * double when the table fills. Keys come from authenticated clients, so FNV-1a is hash enough. */
#include "common/store_table.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_key(const void *key, size_t n) {
  const uint8_t *p = key;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

dtr_result dtr__st_init(dtr__st_table *t) {
  t->nbuckets = 1024;
  t->count = 0;
  t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
  return t->buckets ? DTR_OK : DTR_ERR_NOMEM;
}

void dtr__st_free(dtr__st_table *t) {
  for (size_t i = 0; t->buckets && i < t->nbuckets; i++) {
    dtr__st_entry *e = t->buckets[i];
    while (e) {
      dtr__st_entry *next = e->next;
      free(e->val);
      free(e);
      e = next;
    }
  }
  free(t->buckets);
  t->buckets = NULL;
  t->nbuckets = t->count = 0;
}

dtr__st_entry *dtr__st_find(const dtr__st_table *t, const void *key, size_t klen) {
  uint64_t h = hash_key(key, klen);
  for (dtr__st_entry *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->next)
    if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) return e;
  return NULL;
}

/* Double the buckets; on allocation failure keep the old ones (longer chains, still correct). */
static void grow(dtr__st_table *t) {
  size_t n = t->nbuckets * 2;
  dtr__st_entry **b = calloc(n, sizeof *b);
  if (!b) return;
  for (size_t i = 0; i < t->nbuckets; i++) {
    dtr__st_entry *e = t->buckets[i];
    while (e) {
      dtr__st_entry *next = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
      e = next;
    }
  }
  free(t->buckets);
  t->buckets = b;
  t->nbuckets = n;
}

dtr_result dtr__st_get_or_create(dtr__st_table *t, const void *key, size_t klen, dtr__st_entry **out) {
  dtr__st_entry *e = dtr__st_find(t, key, klen);
  if (e) {
    *out = e;
    return DTR_OK;
  }
  e = calloc(1, sizeof *e + klen + 1);
  if (!e) return DTR_ERR_NOMEM;
  e->hash = hash_key(key, klen);
  e->klen = (uint16_t)klen;
  memcpy(e->key, key, klen);
  if (t->count >= t->nbuckets) grow(t);
  size_t b = e->hash & (t->nbuckets - 1);
  e->next = t->buckets[b];
  t->buckets[b] = e;
  t->count++;
  *out = e;
  return DTR_OK;
}

dtr_result dtr__st_set_value(dtr__st_entry *e, const void *p, size_t n) {
  uint8_t *v = malloc(n + 1);
  if (!v) return DTR_ERR_NOMEM;
  if (n) memcpy(v, p, n);
  v[n] = 0;
  free(e->val);
  e->val = v;
  e->vlen = (uint32_t)n;
  e->has_value = 1;
  return DTR_OK;
}

int dtr__st_release_if_unused(dtr__st_table *t, dtr__st_entry *e) {
  if (e->has_value || e->waiters) return 0;
  dtr__st_entry **pp = &t->buckets[e->hash & (t->nbuckets - 1)];
  while (*pp && *pp != e) pp = &(*pp)->next;
  if (*pp) *pp = e->next;
  t->count--;
  free(e->val);
  free(e);
  return 1;
}

void dtr__st_clear_value(dtr__st_table *t, dtr__st_entry *e) {
  free(e->val);
  e->val = NULL;
  e->vlen = 0;
  e->has_value = 0;
  dtr__st_release_if_unused(t, e);
}

void dtr__st_link_add(dtr__st_entry *e, dtr__st_link *l) {
  l->entry = e;
  l->prev = NULL;
  l->next = e->waiters;
  if (e->waiters) e->waiters->prev = l;
  e->waiters = l;
}

void dtr__st_link_remove(dtr__st_link *l) {
  if (!l->entry) return;
  if (l->prev)
    l->prev->next = l->next;
  else
    l->entry->waiters = l->next;
  if (l->next) l->next->prev = l->prev;
  l->entry = NULL;
  l->prev = l->next = NULL;
}
