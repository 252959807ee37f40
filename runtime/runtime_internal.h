/* Private declarations shared by runtime/identity.c, runtime/runtime.c and runtime/parallel/dp_sync.c (and
 * the tests that look inside them): the store rules for launchers that bring no store, and the DP helper's
 * counters. Nothing here is part of the public API. */
#ifndef DTRAIN_RUNTIME_INTERNAL_H
#define DTRAIN_RUNTIME_INTERNAL_H

#include <stddef.h>

#include "dtrain/runtime.h"

/* The job token a self-hosted store uses: DTRAIN_JOB_TOKEN when set, else one derived from values every
 * rank of the job sees (launcher kind + job id + store endpoint). A derived token only keeps two jobs
 * apart; it is no secret. envp NULL: this process's environment. */
void dtr__identity_token(char *const *envp, const dtr_identity *id, char *buf, size_t cap);

/* How many of the DP helper's buckets have started their all-reduce in the current step (0 after
 * dtr_dp_sync_finish), and the total seconds dtr_dp_sync_finish has waited over all steps. */
int dtr__dp_sync_started(const dtr_dp_sync *s);
double dtr__dp_sync_total_wait(const dtr_dp_sync *s);
/* Bucket i's element range [*offset, *offset + *count) in the flat buffer. DTR_ERR_INVALID past the end. */
dtr_result dtr__dp_sync_bucket(const dtr_dp_sync *s, int i, size_t *offset, size_t *count);

#endif
