/* The device mesh dp x tp x pp in Megatron order: tensor-parallel ranks adjacent (they exchange the
 * most, so they share a node), pipeline stages furthest apart. Pure arithmetic; the groups themselves
 * are built by dtr_init with dtr_comm_split. */
#include <limits.h>

#include "common/check.h"
#include "dtrain/runtime.h"

dtr_result dtr_mesh_make(int world, int dp, int tp, int pp, int rank, dtr_mesh *out, char *err,
                         size_t errcap) {
  if (!out) return dtr__fail(err, errcap, DTR_ERR_INVALID, "mesh: out is NULL");
  if (world < 1) return dtr__fail(err, errcap, DTR_ERR_INVALID, "mesh: world size %d is not positive", world);
  if (tp < 1 || pp < 1 || dp < 0)
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "mesh: sizes dp %d x tp %d x pp %d: tp and pp must be >= 1, dp >= 0", dp, tp, pp);
  if (dp == 0) {
    if (world % ((long long)tp * pp) != 0)
      return dtr__fail(err, errcap, DTR_ERR_INVALID,
                       "mesh: world size %d is not divisible by tp %d x pp %d (dp would be %d.%d...)", world,
                       tp, pp, (int)(world / ((long long)tp * pp)), (int)(world % ((long long)tp * pp)));
    dp = (int)(world / ((long long)tp * pp));
  }
  long long prod = (long long)dp * tp * pp;
  if (prod != world)
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "mesh: dp %d x tp %d x pp %d = %lld does not equal the world size %d", dp, tp, pp, prod,
                     world);
  if (rank < 0 || rank >= world)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "mesh: rank %d is outside the world of %d", rank, world);
  out->dp = dp;
  out->tp = tp;
  out->pp = pp;
  out->tp_rank = rank % tp;
  out->dp_rank = (rank / tp) % dp;
  out->pp_rank = rank / (tp * dp);
  return DTR_OK;
}

int dtr_mesh_rank_of(const dtr_mesh *m, int dp_rank, int tp_rank, int pp_rank) {
  if (!m || dp_rank < 0 || dp_rank >= m->dp || tp_rank < 0 || tp_rank >= m->tp || pp_rank < 0 ||
      pp_rank >= m->pp)
    return -1;
  return pp_rank * (m->dp * m->tp) + dp_rank * m->tp + tp_rank;
}
