#!/usr/bin/env bash
# `mpirun -np 2 dtrain train RECIPE` (DESIGN.md: the runtime recognises Open MPI's environment) trains
# the same model as `dtrain run` on 2 ranks: with the host backend (rank 0 hosts the store) and with
# the mpi backend, the final weights (the summary's xxh64 of parameters and AdamW moments) are the same
# bits as under dtrain launch, and every run wrote its checkpoint.
# ctest-labels: train mpi
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

cat > "$T/r.yaml" <<YAML
job:
  name: mpi
  seed: 11
launch:
  nproc_per_node: 2
model:
  block_size: 11
  n_layer: 1
  n_head: 2
  n_embd: 32
data:
  kind: addition
  digits: 3
train:
  steps: 40
  global_batch: 16
  micro_batch: 4
  lr: 3.0e-3
  warmup_steps: 5
  log_every: 20
  threads: 1
YAML

weights() { grep -o 'weights xxh64 [0-9a-f]*' "$1" | tail -1; }

cd "$T"
timeout 120 "$DTRAIN" run r.yaml job.run_dir="$T/launch" > launch.out 2>&1 || fail "dtrain run failed: $(tail -20 launch.out)"
ref=$(weights launch.out)
[ -n "$ref" ] || fail "no weights line from dtrain run: $(tail -5 launch.out)"
echo "ok: dtrain run on 2 ranks: $ref"

for backend in host mpi; do
  timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 "$DTRAIN" train r.yaml launch.backend=$backend \
    job.run_dir="$T/mpi-$backend" > "mpi-$backend.out" 2>&1 || fail "mpirun ($backend) failed: $(tail -20 mpi-$backend.out)"
  got=$(weights "mpi-$backend.out")
  [ "$got" = "$ref" ] || fail "mpirun with the $backend backend ended with '$got', dtrain run with '$ref'"
  ls "$T/mpi-$backend"/checkpoints/step_00000040/rank_00001.dtck > /dev/null ||
    fail "mpirun ($backend): no checkpoint shard of rank 1 at step 40"
  echo "ok: mpirun -np 2 with the $backend backend: same weights, checkpoint written"
done
echo "PASS: mpirun-launched training matches dtrain run"
