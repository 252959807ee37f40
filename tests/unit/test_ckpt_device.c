/* Device tensors (DTR_CKPT_CUDA) where they cannot work: a build without CUDA, or with CUDA and no
 * device, refuses them with DTR_ERR_UNSUPPORTED naming the tensor; an unknown device value is
 * DTR_ERR_INVALID; host memory claimed as device memory is refused where a GPU exists. A refusal
 * registers nothing and the checkpointer still saves and loads host tensors. Staging memory
 * (pinned or not) is usable and freed. The GPU path itself: tests/helpers/ckpt_gpu_check.c. */
// ctest-labels: ckpt
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/ckpt_internal.h"
#include "common/device.h"
#include "dtrain/ckpt.h"
#include "tests/unit/test_util.h"

static void rm_rf(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

int main(void) {
  char dir[256];
  snprintf(dir, sizeof dir, "/tmp/dtr_ckpt_device_XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  int has_cuda = strstr(dtr_build_features(), "cuda") != NULL;
  int ndev = dtr__cuda_device_count();
  printf("build features: %s; CUDA devices visible: %d\n", dtr_build_features(), ndev);

  dtr_ckpt_config cfg = dtr_ckpt_config_default(dir);
  dtr_ckpt *ck = NULL;
  char err[512] = "";
  CHECK_EQ_INT(dtr_ckpt_create(&cfg, &ck, err, sizeof err), DTR_OK);
  if (!ck) {
    fprintf(stderr, "create: %s\n", err);
    rm_rf(dir);
    return 1;
  }

  float w[64], w2[64];
  for (int i = 0; i < 64; i++) w[i] = (float)i * 0.75f - 3.0f;
  int64_t shape[2] = {8, 8};

  /* A zeroed tensor is a host tensor: existing callers are unchanged. */
  dtr_ckpt_tensor t = dtr_ckpt_tensor_full("w", DTR_F32, 2, shape, w);
  CHECK_EQ_INT(t.device, DTR_CKPT_HOST);

  /* An unknown device value. */
  t.device = 7;
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &t), DTR_ERR_INVALID);
  CHECK(strstr(dtr_ckpt_last_error(ck), "'w'") && strstr(dtr_ckpt_last_error(ck), "device 7"));
  printf("unknown device: %s\n", dtr_ckpt_last_error(ck));

  /* Host memory registered as device memory: refused in every configuration, for its own reason. */
  t.device = DTR_CKPT_CUDA;
  dtr_result rc = dtr_ckpt_add_tensor(ck, &t);
  const char *msg = dtr_ckpt_last_error(ck);
  printf("device tensor: %s: %s\n", dtr_strerror(rc), msg);
  CHECK(strstr(msg, "'w'") != NULL);
  if (!has_cuda) {
    CHECK_EQ_INT(rc, DTR_ERR_UNSUPPORTED);
    CHECK(strstr(msg, "this build of dtrain has no CUDA") != NULL);
  } else if (ndev < 1) {
    CHECK_EQ_INT(rc, DTR_ERR_UNSUPPORTED);
    CHECK(strstr(msg, "no CUDA device is visible") != NULL);
  } else {
    CHECK_EQ_INT(rc, DTR_ERR_INVALID);
    CHECK(strstr(msg, "not CUDA device memory") != NULL);
  }
  /* A device tensor with an empty box and no data: refused the same way without a usable device. */
  dtr_ckpt_tensor e = dtr_ckpt_tensor_full("empty", DTR_BF16, 2, (int64_t[]){0, 4}, NULL);
  e.device = DTR_CKPT_CUDA;
  rc = dtr_ckpt_add_tensor(ck, &e);
  CHECK_EQ_INT(rc, (has_cuda && ndev > 0) ? DTR_OK : DTR_ERR_UNSUPPORTED);

  /* Nothing of the refused registrations stuck: the name is free and host save/load work. */
  t.device = DTR_CKPT_HOST;
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &t), DTR_OK);
  CHECK_EQ_INT(dtr_ckpt_save_async(ck, 5), DTR_OK);
  for (int i = 0; i < 64; i++) w[i] = -1.0f; /* after return: not in the snapshot */
  CHECK_EQ_INT(dtr_ckpt_wait(ck), DTR_OK);
  dtr_ckpt_destroy(ck);

  ck = NULL;
  CHECK_EQ_INT(dtr_ckpt_create(&cfg, &ck, err, sizeof err), DTR_OK);
  if (ck) {
    /* Load into another layout: rows 2..6 only. */
    dtr_ckpt_tensor h = dtr_ckpt_tensor_full("w", DTR_F32, 2, shape, w2);
    h.offset[0] = h.save_offset[0] = 2;
    h.extent[0] = h.save_extent[0] = 4;
    CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &h), DTR_OK);
    int64_t step = -1;
    CHECK_EQ_INT(dtr_ckpt_load(ck, &step), DTR_OK);
    CHECK_EQ_INT(step, 5);
    int bad = 0;
    for (int i = 0; i < 32; i++)
      if (w2[i] != (float)(i + 16) * 0.75f - 3.0f) bad++;
    CHECK_EQ_INT(bad, 0);
    dtr_ckpt_destroy(ck);
  }

  /* Staging memory: pinned where it can be, plain otherwise; writable to the last byte; freed. */
  for (int pinned = 0; pinned < 2; pinned++) {
    unsigned char *p = dtr__ckpt_stage_alloc(1 << 20, pinned);
    CHECK(p != NULL);
    if (p) {
      memset(p, 0xa5, 1 << 20);
      CHECK(p[0] == 0xa5 && p[(1 << 20) - 1] == 0xa5);
      CHECK(((uintptr_t)p & 15) == 0);
    }
    dtr__ckpt_stage_free(p);
  }
  dtr__ckpt_stage_free(NULL);

  rm_rf(dir);
  return TEST_EXIT();
}
