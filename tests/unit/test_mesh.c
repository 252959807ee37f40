/* The device mesh: for several shapes every rank -> coordinates -> rank round trip, Megatron order
 * (TP fastest, then DP, PP slowest) against an independent enumeration, dp 0 meaning "the rest", and
 * errors that name the sizes. */
#include <string.h>

#include "dtrain/runtime.h"
#include "tests/unit/test_util.h"

static void shape(int world, int dp, int tp, int pp) {
  /* independent reference: enumerate pp, then dp, then tp: the rank counter is the Megatron rank */
  int r = 0, ddp = dp ? dp : world / (tp * pp);
  for (int p = 0; p < pp; p++)
    for (int d = 0; d < ddp; d++)
      for (int t = 0; t < tp; t++, r++) {
        dtr_mesh m;
        char err[256] = "";
        CHECK_EQ_INT(dtr_mesh_make(world, dp, tp, pp, r, &m, err, sizeof err), DTR_OK);
        CHECK_EQ_INT(m.dp, ddp);
        CHECK_EQ_INT(m.tp, tp);
        CHECK_EQ_INT(m.pp, pp);
        CHECK_EQ_INT(m.tp_rank, t);
        CHECK_EQ_INT(m.dp_rank, d);
        CHECK_EQ_INT(m.pp_rank, p);
        CHECK_EQ_INT(dtr_mesh_rank_of(&m, m.dp_rank, m.tp_rank, m.pp_rank), r);
        CHECK_EQ_INT(dtr_mesh_rank_of(&m, d, t, p), r);
      }
  CHECK_EQ_INT(r, world);
}

static void bad(int world, int dp, int tp, int pp, int rank, const char *needle) {
  dtr_mesh m;
  char err[256] = "";
  CHECK_EQ_INT(dtr_mesh_make(world, dp, tp, pp, rank, &m, err, sizeof err), DTR_ERR_INVALID);
  if (!strstr(err, needle)) fprintf(stderr, "  mesh error: %s (wanted %s)\n", err, needle);
  CHECK(strstr(err, needle) != NULL);
}

int main(void) {
  shape(1, 1, 1, 1);
  shape(1, 0, 1, 1);
  shape(8, 2, 2, 2);
  shape(8, 4, 2, 1);
  shape(8, 0, 2, 1); /* dp = 4 */
  shape(8, 1, 8, 1);
  shape(8, 1, 1, 8);
  shape(8, 8, 1, 1);
  shape(12, 3, 2, 2);
  shape(12, 0, 1, 3);
  shape(24, 2, 3, 4);
  shape(30, 5, 3, 2);

  /* spot checks of the layout itself: dp2 x tp2 x pp2, rank 6 = pp 1, dp 1, tp 0 */
  dtr_mesh m;
  CHECK_EQ_INT(dtr_mesh_make(8, 2, 2, 2, 6, &m, NULL, 0), DTR_OK);
  CHECK_EQ_INT(m.pp_rank, 1);
  CHECK_EQ_INT(m.dp_rank, 1);
  CHECK_EQ_INT(m.tp_rank, 0);
  CHECK_EQ_INT(dtr_mesh_rank_of(&m, 0, 1, 1), 5);
  CHECK_EQ_INT(dtr_mesh_rank_of(&m, 1, 1, 0), 3);
  /* out-of-range coordinates */
  CHECK_EQ_INT(dtr_mesh_rank_of(&m, 2, 0, 0), -1);
  CHECK_EQ_INT(dtr_mesh_rank_of(&m, 0, -1, 0), -1);
  CHECK_EQ_INT(dtr_mesh_rank_of(&m, 0, 0, 2), -1);
  CHECK_EQ_INT(dtr_mesh_rank_of(NULL, 0, 0, 0), -1);

  bad(8, 3, 2, 2, 0, "dp 3 x tp 2 x pp 2 = 12 does not equal the world size 8");
  bad(8, 2, 2, 1, 0, "dp 2 x tp 2 x pp 1 = 4 does not equal the world size 8");
  bad(8, 0, 3, 1, 0, "world size 8 is not divisible by tp 3 x pp 1");
  bad(8, 0, 0, 1, 0, "tp and pp must be >= 1");
  bad(8, 2, 2, -2, 0, "tp and pp must be >= 1");
  bad(8, -1, 2, 2, 0, "dp >= 0");
  bad(0, 1, 1, 1, 0, "world size 0 is not positive");
  bad(8, 2, 2, 2, 8, "rank 8 is outside the world of 8");
  bad(8, 2, 2, 2, -1, "rank -1 is outside");
  return TEST_EXIT();
}
