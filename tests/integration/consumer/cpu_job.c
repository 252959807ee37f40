/* A CPU program outside the dtrain tree, built against an installed libdtrain (test_lazy_libs.sh): a
 * store, a host communicator's all-reduce, a checkpoint saved and loaded back. `cpu_job BACKEND N` then
 * asks for rank 0 of N on that backend ("mpi", "nccl"; N > 1 for mpi, whose single-rank communicators
 * need no MPI) and prints why it cannot have it (exit 3), or that it could (exit 0). Exit 1 when the
 * CPU work fails. */
#include <dtrain/ckpt.h>
#include <dtrain/comm.h>
#include <dtrain/store.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  char err[2048], dir[] = "/tmp/cpu_job_ckpt_XXXXXX";
  dtr_store_server *srv = NULL;
  dtr_store *st = NULL;
  dtr_comm *c = NULL;
  dtr_ckpt *ck = NULL;
  if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
  dtr_comm_config cfg = dtr_comm_config_default();
  float x[4] = {1, 2, 3, 4}, w[8], back[8];
  for (int i = 0; i < 8; i++) w[i] = (float)i * 0.5f;
  int64_t shape[1] = {8}, step = -1;
  dtr_ckpt_config cc = dtr_ckpt_config_default(dir);
  dtr_ckpt_tensor t = dtr_ckpt_tensor_full("w", DTR_F32, 1, shape, w);
  if (dtr_store_server_create("127.0.0.1", 0, "cpu-job", &srv, err, sizeof err) != DTR_OK ||
      dtr_store_server_start(srv) != DTR_OK ||
      dtr_store_connect("127.0.0.1", dtr_store_server_port(srv), "cpu-job", 5000, &st, err, sizeof err) !=
          DTR_OK ||
      dtr_comm_create(st, 0, 1, &cfg, &c, err, sizeof err) != DTR_OK ||
      dtr_all_reduce(c, x, x, 4, DTR_F32, DTR_SUM, NULL) != DTR_OK || x[3] != 4.0f ||
      dtr_ckpt_create(&cc, &ck, err, sizeof err) != DTR_OK || dtr_ckpt_add_tensor(ck, &t) != DTR_OK ||
      dtr_ckpt_save(ck, 5) != DTR_OK) {
    fprintf(stderr, "cpu_job: %s\n", err[0] ? err : (ck ? dtr_ckpt_last_error(ck) : "failed"));
    return 1;
  }
  memcpy(back, w, sizeof w);
  memset(w, 0, sizeof w);
  if (dtr_ckpt_load(ck, &step) != DTR_OK || step != 5 || memcmp(w, back, sizeof w) != 0) {
    fprintf(stderr, "cpu_job: load: %s\n", dtr_ckpt_last_error(ck));
    return 1;
  }
  dtr_ckpt_destroy(ck);
  dtr_comm_destroy(c);
  printf("cpu_job: store, host all-reduce and a checkpoint of dtrain %s (%s): ok\n", dtr_version(),
         dtr_build_features());
  int code = 0;
  if (argc > 1) {
    dtr_comm_config bc = dtr_comm_config_default();
    dtr_comm *b = NULL;
    if (dtr_backend_parse(argv[1], &bc.backend) != DTR_OK) return 2;
    bc.timeout_ms = 5000;
    int n = argc > 2 ? atoi(argv[2]) : 1;
    if (dtr_comm_create(strcmp(argv[1], "mpi") ? st : NULL, 0, n, &bc, &b, err, sizeof err) != DTR_OK) {
      printf("cpu_job: the %s backend: %s\n", argv[1], err);
      code = 3;
    } else {
      printf("cpu_job: the %s backend works\n", argv[1]);
      dtr_comm_destroy(b);
    }
  }
  dtr_store_close(st);
  dtr_store_server_destroy(srv);
  char rm[128];
  snprintf(rm, sizeof rm, "rm -rf %s", dir);
  if (system(rm) != 0) return 1;
  return code;
}
