#!/usr/bin/env bash
# libdtrain needs no CUDA runtime, NCCL or MPI library to load: a copy of the installed tree has none of
# them among its NEEDED entries, and with every libcudart, libnccl, libmpi, libcublas and libcuda of this
# machine hidden (a private mount namespace with /dev/null bound over each file, checked to really fail to
# load), a downstream CPU program built with pkg-config against the copy runs (store, host all-reduce,
# checkpoint), the copy's dtrain trains gpt-tiny on 2 ranks and says in --version that NCCL and MPI are
# not found, and asking for the mpi or nccl backend fails with a message naming the library instead of
# the program failing to start. Outside the namespace the same program starts MPI when it asks for the
# mpi backend (the library is opened then).
# ctest-labels: install
# ctest-timeout: 240
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
[ "$(id -u)" = 0 ] || fail "needs root (CAP_SYS_ADMIN) for a private mount namespace that hides the libraries"
command -v unshare > /dev/null || fail "unshare (util-linux) is not installed"
features=$("$DTRAIN" --version | head -1)

cmake --install "$BUILD" --prefix "$T/prefix" > "$T/install.log" || fail "install: $(tail "$T/install.log")"
cp -a "$T/prefix" "$T/copy"
for f in "$T/copy/lib/libdtrain.so" "$T/copy/bin/dtrain"; do
  needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  echo "$f needs: $needed"
  grep -qE 'libcudart|libnccl|libmpi|libcublas|libcuda\.' <<<"$needed" && fail "$f links $needed"
done
export PKG_CONFIG_PATH=$T/copy/lib/pkgconfig
cc -o "$T/cpu_job" "$SRC/tests/integration/consumer/cpu_job.c" $(pkg-config --cflags --libs dtrain) \
  $(pkg-config --variable=rpath dtrain) || fail "the downstream build"

# every copy of the libraries on this machine, as real files
mapfile -t hide < <(for d in /usr/local /usr/lib /usr/lib64 /lib /opt; do
  [ -d "$d" ] && find "$d" \( -name 'libcudart.so*' -o -name 'libnccl.so*' -o -name 'libmpi.so*' \
    -o -name 'libcublas*.so*' -o -name 'libcuda.so*' \) 2>/dev/null; done | xargs -r readlink -f | sort -u)
echo "hiding ${#hide[@]} files"
cat > "$T/hidden.sh" <<'SH'
set -u
T=$1; shift
for f in "$@"; do mount --bind /dev/null "$f" || { echo "cannot hide $f"; exit 9; }; done
for lib in libmpi.so.40 libnccl.so.2 libcudart.so.13; do
  /usr/bin/python3 -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$lib" 2>/dev/null && { echo "$lib still loads"; exit 8; }
done
"$T/cpu_job" > "$T/cpu.out" 2>&1; echo "cpu $?" >> "$T/rc"
timeout 60 "$T/cpu_job" mpi 2 > "$T/mpi.out" 2>&1; echo "mpi $?" >> "$T/rc"
timeout 60 "$T/cpu_job" nccl 1 > "$T/nccl.out" 2>&1; echo "nccl $?" >> "$T/rc"
"$T/copy/bin/dtrain" --version > "$T/version.out" 2>&1; echo "version $?" >> "$T/rc"
cd "$T" && timeout 120 "$T/copy/bin/dtrain" run "$SRC/recipes/gpt-tiny.yaml" train.steps=20 launch.nproc_per_node=2 \
  job.run_dir="$T/tiny" > "$T/tiny.out" 2>&1; echo "tiny $?" >> "$T/rc"
SH
SRC=$SRC timeout 200 unshare --mount --propagation private bash "$T/hidden.sh" "$T" "${hide[@]}" > "$T/hidden.log" 2>&1 \
  || fail "the hidden run: $(cat "$T/hidden.log")"
rc() { sed -n "s/^$1 //p" "$T/rc"; }
[ "$(rc cpu)" = 0 ] || fail "the CPU program without the libraries: $(cat "$T/cpu.out")"
[ "$(rc version)" = 0 ] && grep -q "nccl not found" "$T/version.out" && grep -q "MPI not found" "$T/version.out" \
  || fail "dtrain --version without the libraries: $(cat "$T/version.out")"
[ "$(rc tiny)" = 0 ] && grep -q "done: 20 steps" "$T/tiny.out" || fail "gpt-tiny without the libraries: $(tail "$T/tiny.out")"
if grep -q mpi <<<"$features"; then
  [ "$(rc mpi)" = 3 ] && grep -q "MPI is not installed here: cannot load libmpi.so" "$T/mpi.out" \
    || fail "the mpi backend without libmpi: exit $(rc mpi): $(cat "$T/mpi.out")"
fi
if grep -q nccl <<<"$features"; then
  [ "$(rc nccl)" = 3 ] && grep -q "NCCL is not installed here: cannot load libnccl.so" "$T/nccl.out" \
    || fail "the nccl backend without libnccl: exit $(rc nccl): $(cat "$T/nccl.out")"
fi
cat "$T/cpu.out" "$T/mpi.out" "$T/nccl.out" "$T/version.out"
# with the libraries where they are, the same program opens MPI when it asks for it: MPI starts (as a
# singleton, without mpirun) and says the world is 1 rank, not the 2 asked for
if grep -q mpi <<<"$features"; then
  rc=0; timeout 60 "$T/cpu_job" mpi 2 > "$T/mpi2.out" 2>&1 || rc=$?
  [ $rc = 3 ] && grep -q "but MPI_COMM_WORLD says rank 0 of 1" "$T/mpi2.out" || fail "the mpi backend with libmpi: exit $rc: $(cat "$T/mpi2.out")"
fi
echo "PASS"
