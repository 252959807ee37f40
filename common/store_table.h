/* The store server's key table: a chained hash table of entries, each holding an optional value and
 * the list of clients parked on that key (an entry may exist with waiters but no value yet).
 * Owned and used by the server's event-loop thread only; nothing here is thread-safe. */
#ifndef DTRAIN_COMMON_STORE_TABLE_H
#define DTRAIN_COMMON_STORE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

typedef struct dtr__st_entry dtr__st_entry;

/* One waiter's hook on one entry; the owner (a parked request) embeds these. */
typedef struct dtr__st_link {
  struct dtr__st_link *prev, *next;
  dtr__st_entry *entry; /* NULL once unlinked */
  void *owner;
} dtr__st_link;

struct dtr__st_entry {
  dtr__st_entry *next; /* bucket chain */
  uint64_t hash;
  uint8_t *val; /* has_value: vlen bytes plus a NUL, so counters parse in place */
  uint32_t vlen;
  int has_value;
  dtr__st_link *waiters;
  uint16_t klen;
  char key[]; /* klen bytes plus a NUL */
};

typedef struct dtr__st_table {
  dtr__st_entry **buckets;
  size_t nbuckets, count;
} dtr__st_table;

dtr_result dtr__st_init(dtr__st_table *t);
/* Free every entry (waiters must already be gone) and the buckets. */
void dtr__st_free(dtr__st_table *t);
dtr__st_entry *dtr__st_find(const dtr__st_table *t, const void *key, size_t klen);
/* Find the entry or insert an empty one (no value, no waiters). DTR_ERR_NOMEM on failure. */
dtr_result dtr__st_get_or_create(dtr__st_table *t, const void *key, size_t klen, dtr__st_entry **out);
/* Replace (or give) the entry's value with a copy of p[0..n). */
dtr_result dtr__st_set_value(dtr__st_entry *e, const void *p, size_t n);
/* Drop the value; then remove and free the entry if nobody waits on it. */
void dtr__st_clear_value(dtr__st_table *t, dtr__st_entry *e);
/* Remove and free the entry when it has neither a value nor waiters; returns 1 if it did. */
int dtr__st_release_if_unused(dtr__st_table *t, dtr__st_entry *e);

void dtr__st_link_add(dtr__st_entry *e, dtr__st_link *l);
void dtr__st_link_remove(dtr__st_link *l);

#endif
