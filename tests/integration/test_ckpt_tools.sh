#!/usr/bin/env bash
# `dtrain ckpt` end to end: ckpt_make writes a 4-rank checkpoint of known values (tensors split along
# dim 0 and dim 1, replicated with DP shares, rank-0-only, bf16/f16/f32/f64/i32/i64/u8, a scalar, blobs);
# ls and inspect must describe it; verify passes, then fails naming the shard file and the chunk after
# one byte inside a chunk is flipped; export is read by /usr/bin/python3 + torch (header parsed with
# json, tensors built with torch.frombuffer) and every tensor compared with the formula; a safetensors
# file written by Python is imported and loaded back by ckpt_make in other layouts (3 and 4 ranks).
# ctest-labels: ckpt
# ctest-timeout: 400
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
MK=$BUILD/bin/ckpt_make
PY=/usr/bin/python3
[ -x "$MK" ] || fail "$MK not built"

# ---- the Python side: read/check an export, write a file to import
cat > "$T/st.py" <<'EOF'
import json, struct, sys, torch
DT = {'F32': torch.float32, 'F64': torch.float64, 'F16': torch.float16, 'BF16': torch.bfloat16,
      'I32': torch.int32, 'I64': torch.int64, 'U8': torch.uint8, 'I8': torch.int8}
OURS = {'f32': 'F32', 'f64': 'F64', 'f16': 'F16', 'bf16': 'BF16', 'i32': 'I32', 'i64': 'I64', 'u8': 'U8'}
SAME_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    hdr = json.loads(b[8:8 + n].decode('utf-8'))
    meta = hdr.pop('__metadata__', {})
    data = b[8 + n:]
    out, ends = {}, []
    for name, t in hdr.items():
        s, e = t['data_offsets']
        dt = DT[t['dtype']]
        x = torch.frombuffer(bytearray(data[s:e]), dtype=dt) if e > s else torch.empty(0, dtype=dt)
        out[name] = x.reshape(t['shape'])
        ends.append((s, e))
    ends.sort()
    pos = 0
    for s, e in ends:
        assert s == pos, f'{path}: hole or overlap at data byte {s}'
        pos = e
    assert pos == len(data), f'{path}: tensors cover {pos} of {len(data)} data bytes'
    return n, meta, out, hdr

def expect(sp, step):
    shape = sp['shape']
    n = 1
    for d in shape: n *= d
    g = torch.arange(n, dtype=torch.int64)
    k = sp['id'] * 13 + step
    dt = OURS[sp['dtype']]
    if dt in ('F32', 'F64', 'F16', 'BF16'):
        v = ((((g * 7 + k) % 251) - 125).to(torch.float64) * 0.5).to(DT[dt])
    elif dt == 'I32':
        v = (g * 3 - k * 1000).to(torch.int32)
    elif dt == 'I64':
        v = g * 1000003 + k * (1 << 33)
    else:
        v = ((g * 5 + k) & 255).to(torch.uint8)
    return v.reshape(shape)

def blob_rng(r, step):
    return torch.tensor([(r * 31 + i * 7 + step) & 255 for i in range(24)], dtype=torch.uint8)

def blob_pos(r, step):
    return torch.frombuffer(bytearray(struct.pack('<q', 1000 * step + r)), dtype=torch.uint8)

def check_export(path, step, spec, world):
    n, meta, ts, hdr = load(path)
    assert n % 8 == 0, f'header length {n} not 8-aligned'
    assert meta.get('format') == 'pt' and meta.get('dtrain_step') == str(step), meta
    names = {sp['name'] for sp in spec}
    for sp in spec:
        x = ts[sp['name']]
        want = expect(sp, step)
        assert x.dtype == want.dtype, f"{sp['name']}: dtype {x.dtype} vs {want.dtype}"
        assert list(x.shape) == sp['shape'], f"{sp['name']}: shape {list(x.shape)} vs {sp['shape']}"
        bad = (x != want).sum().item()
        assert bad == 0, f"{sp['name']}: {bad} elements differ, first values {x.flatten()[:4]} vs {want.flatten()[:4]}"
    blobs = [k for k in ts if k.startswith('__blob__/')]
    if world > 0:
        for r in range(world):
            assert torch.equal(ts[f'__blob__/rng/rank_{r}'], blob_rng(r, step)), f'rng of rank {r}'
            assert torch.equal(ts[f'__blob__/data_pos/rank_{r}'], blob_pos(r, step)), f'data_pos of rank {r}'
        names |= set(blobs)
    else:
        assert not blobs, blobs
    assert set(ts) == names, f'unexpected tensors {set(ts) ^ names}'
    print(f'python: {path}: {len(ts)} tensors match (dtypes {sorted({str(t.dtype) for t in ts.values()})})')

def raw(t):
    t = t.contiguous().reshape(-1)
    return t.view(SAME_SIZE[t.element_size()]).numpy().tobytes()

def write(path, tensors, meta=None):
    # compact JSON, tensors in reverse order, no padding: unlike dtrain's own writer
    hdr, blobs, pos = {}, [], 0
    for name, t in reversed(list(tensors.items())):
        b = raw(t)
        dt = [k for k, v in DT.items() if v == t.dtype][0]
        hdr[name] = {'dtype': dt, 'shape': list(t.shape), 'data_offsets': [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    if meta: hdr['__metadata__'] = meta
    h = json.dumps(hdr, separators=(',', ':')).encode()
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))

cmd, path = sys.argv[1], sys.argv[2]
if cmd == 'check-export':
    check_export(path, int(sys.argv[3]), json.loads(open(sys.argv[4]).read()), int(sys.argv[5]))
elif cmd == 'write-import':
    step, spec = int(sys.argv[3]), json.loads(open(sys.argv[4]).read())
    ts = {sp['name']: expect(sp, step) for sp in spec}
    ts['__blob__/rng/rank_0'] = blob_rng(0, step)
    ts['__blob__/data_pos/rank_0'] = blob_pos(0, step)
    write(path, ts, {'source': 'python'})
elif cmd == 'write-i8':
    write(path, {'x': torch.zeros(4, dtype=torch.int8)})
elif cmd == 'flip':  # flip one byte of a file in place
    off = int(sys.argv[3])
    with open(path, 'r+b') as f:
        f.seek(off); c = f.read(1); f.seek(off); f.write(bytes([c[0] ^ 0x5a]))
EOF
"$MK" spec > "$T/spec.json" || fail "ckpt_make spec"

launch() { # NPROC ckpt_make args...
  local n=$1; shift
  timeout -k 5 150 "$DTRAIN" launch --nproc-per-node "$n" -- "$MK" "$@" > "$T/launch.out" 2>&1 \
    || { tail -n 30 "$T/launch.out"; fail "ckpt_make $* on $n ranks"; }
  local ok
  ok=$(grep -c "ckpt_make rank [0-9]*: \(wrote\|.* 0 wrong\)" "$T/launch.out")
  [ "$ok" = "$n" ] || { cat "$T/launch.out"; fail "ckpt_make $* on $n ranks: $ok of $n ranks reported success"; }
}
expect_rc() { # RC OUTFILE cmd...
  local want=$1 out=$2 rc=0; shift 2
  "$@" > "$out" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || { cat "$out"; fail "'$*' exited $rc, expected $want"; }
}
has() { grep -Eq -- "$2" "$1" || { cat "$1"; fail "no line matching '$2' in $1"; }; }

C=$T/c4
launch 4 write "$C" --steps 100,200 --job-id jobA --chunk-bytes 4096
echo "ok: 4 ranks wrote steps 100 and 200"

# ---- ls
expect_rc 0 "$T/ls" "$DTRAIN" ckpt ls "$C"
has "$T/ls" "latest committed: 200"
has "$T/ls" "^100 +committed +4 +8 +2 +[0-9.]+ KiB +[0-9.]+ KiB +[0-9.]+x .* jobA$"
has "$T/ls" "^200 +latest +4 +8 +2 "
mkdir "$C/.tmp_step_00000300" # what a save in flight (or one that crashed) leaves
expect_rc 0 "$T/ls" "$DTRAIN" ckpt ls "$C"
has "$T/ls" "^300 +unfinished "
rmdir "$C/.tmp_step_00000300"
echo "ok: ls"

# ---- inspect
expect_rc 0 "$T/insp" "$DTRAIN" ckpt inspect "$C"
has "$T/insp" "^step 200 in .*: job 'jobA', 4 ranks"
has "$T/insp" "^8 tensors, 2 blobs"
has "$T/insp" "^tensor embed.weight: f32 \[256, 48\], 49152 bytes, [0-9]+ stored; split along dim 0 into 4 pieces$"
has "$T/insp" "^  rank 1: \[64:128, 0:48\] 12288 bytes in 3 chunks"
has "$T/insp" "^tensor proj.weight: bf16 \[40, 96\], 7680 bytes, .*split along dim 1 into 4 pieces$"
has "$T/insp" "^  rank 3: \[0:40, 72:96\] 1920 bytes"
has "$T/insp" "^tensor head.weight: f16 \[10, 3\], 60 bytes, .*split along dim 0 into 4 pieces$"
has "$T/insp" "^tensor ln.bias: f32 \[48\], .*split along dim 0 into 4 pieces$"
has "$T/insp" "^tensor tok.count: i32 \[7, 5\], 140 bytes, .*whole, saved by rank 0$"
has "$T/insp" "^tensor temp: f64 \[\], 8 bytes, .*whole, saved by (rank 0|4 ranks \(copies\))$"
has "$T/insp" "^blob rng: 4 ranks, 96 bytes in all$"
expect_rc 0 "$T/insp100" "$DTRAIN" ckpt inspect "$C" --step 100 --chunks
has "$T/insp100" "^step 100 in "
has "$T/insp100" "^    chunk 2: elements 2048\.\.3072, .*rank_00001\.dtck offset [0-9]+, [0-9]+ stored bytes, (planes\+zstd|zstd|raw), xxh64 [0-9a-f]{16}$"
echo "ok: inspect"

# ---- verify (clean)
expect_rc 0 "$T/ver" "$DTRAIN" ckpt verify "$C"
has "$T/ver" "^step 100: OK \(4 shards, [0-9]+ chunks"
has "$T/ver" "^step 200: OK \(4 shards"
echo "ok: verify clean"

# ---- load in other layouts (3 ranks layout b: dims swapped; 2 ranks the older step)
launch 3 check "$C" --layout b --saved-world 4 --job-id jobA
launch 2 check "$C" --step 100 --layout a --saved-world 4 --job-id jobA
echo "ok: reloaded on 3 and 2 ranks"

# ---- export, read by Python + torch
expect_rc 0 "$T/exp" "$DTRAIN" ckpt export "$C" "$T/c4.safetensors" --blobs
has "$T/exp" "exported step 200 .*4 ranks.*: 16 tensors"
"$PY" "$T/st.py" check-export "$T/c4.safetensors" 200 "$T/spec.json" 4 || fail "python check of the step 200 export"
expect_rc 0 "$T/exp" "$DTRAIN" ckpt export "$C" "$T/c4_100.safetensors" --step 100
"$PY" "$T/st.py" check-export "$T/c4_100.safetensors" 100 "$T/spec.json" 0 || fail "python check of the step 100 export"
echo "ok: export read by python/torch"

# ---- corruption: flip one byte in the middle of chunk 1 of embed.weight in rank 2's shard (step 200)
B=$T/bad
cp -r "$C" "$B"
expect_rc 0 "$T/chunks" "$DTRAIN" ckpt inspect "$B" --chunks
line=$(awk '/^tensor embed.weight/ {t=1; next} /^(tensor|blob)/ {t=0} t && /^  rank 2:/ {r=1; next} t && /^  rank/ {r=0} t && r && /^    chunk 1:/ {print; exit}' "$T/chunks")
[ -n "$line" ] || { cat "$T/chunks"; fail "no chunk 1 of embed.weight rank 2 in inspect --chunks"; }
off=$(sed -E 's/.* offset ([0-9]+), ([0-9]+) stored bytes.*/\1/' <<< "$line")
len=$(sed -E 's/.* offset ([0-9]+), ([0-9]+) stored bytes.*/\2/' <<< "$line")
"$PY" "$T/st.py" flip "$B/step_00000200/rank_00002.dtck" $((off + len / 2))
expect_rc 1 "$T/ver" "$DTRAIN" ckpt verify "$B"
has "$T/ver" "^BROKEN .*step_00000200/rank_00002\.dtck: chunk 1 of 3 of 'embed\.weight' \(file offset $off"
has "$T/ver" "^dtrain ckpt verify: .*rank_00002\.dtck: chunk 1 "
has "$T/ver" "^step 200: BROKEN \(1 problem\)"
has "$T/ver" "^step 100: OK"
expect_rc 0 "$T/ver" "$DTRAIN" ckpt verify "$B" --step 100
expect_rc 1 "$T/ver" "$DTRAIN" ckpt verify "$B" --step 200
expect_rc 1 "$T/exp" "$DTRAIN" ckpt export "$B" "$T/bad.safetensors"
has "$T/exp" "rank_00002\.dtck: chunk 1 of 3 of 'embed\.weight'"
[ ! -e "$T/bad.safetensors" ] && [ ! -e "$T/bad.safetensors.tmp" ] || fail "a failed export left a file behind"
# a shard cut short, and a step without its manifest
cp -r "$C" "$T/cut"
truncate -s 5000 "$T/cut/step_00000100/rank_00001.dtck"
expect_rc 1 "$T/ver" "$DTRAIN" ckpt verify "$T/cut"
has "$T/ver" "^BROKEN .*step_00000100/rank_00001\.dtck: index unreadable"
has "$T/ver" "^BROKEN .*step_00000100/rank_00001\.dtck: chunk 0 of 1 of '[a-z_.]+' \(file offset [0-9]+"
rm "$T/cut/step_00000100/rank_00003.dtck"
expect_rc 1 "$T/ver" "$DTRAIN" ckpt verify "$T/cut" --step 100
has "$T/ver" "^BROKEN .*step_00000100/rank_00003\.dtck: .*No such file"
expect_rc 0 "$T/ls" "$DTRAIN" ckpt ls "$T/cut"
has "$T/ls" "^100 +BROKEN +4 .*\(1 shard file missing, first rank_00003\.dtck\)"
rm "$T/cut/step_00000200/manifest.yaml"
expect_rc 0 "$T/ls" "$DTRAIN" ckpt ls "$T/cut"
has "$T/ls" "^200 +BROKEN .*manifest.yaml"
echo "ok: verify names the broken shard file and chunk"

# ---- import a file written by Python + torch, load it in other layouts
"$PY" "$T/st.py" write-import "$T/in.safetensors" 7 "$T/spec.json" || fail "python writer"
expect_rc 0 "$T/imp" "$DTRAIN" ckpt import "$T/in.safetensors" "$T/c7" --step 7 --job-id job7
has "$T/imp" "imported .*: 8 tensors, 2 blobs as step 7"
expect_rc 0 "$T/ls" "$DTRAIN" ckpt ls "$T/c7"
has "$T/ls" "^7 +latest +1 +8 +2 .* job7$"
expect_rc 0 "$T/ver" "$DTRAIN" ckpt verify "$T/c7"
launch 3 check "$T/c7" --layout a --saved-world 1 --job-id job7
launch 4 check "$T/c7" --layout b --saved-world 1 --job-id job7
"$MK" check "$T/c7" --saved-world 1 --job-id job7 > "$T/one" 2>&1 || { cat "$T/one"; fail "1-rank load of the import"; }
expect_rc 0 "$T/exp" "$DTRAIN" ckpt export "$T/c7" "$T/c7.safetensors" --blobs
"$PY" "$T/st.py" check-export "$T/c7.safetensors" 7 "$T/spec.json" 1 || fail "python check of the re-export"
expect_rc 1 "$T/imp" "$DTRAIN" ckpt import "$T/in.safetensors" "$T/c7" --step 7
has "$T/imp" "step_00000007 already exists"
echo "ok: import of a python-written file loads on 1, 3 and 4 ranks"
# imported without --job-id: a checkpoint of no job, which initialises a run of any job
expect_rc 0 "$T/imp" "$DTRAIN" ckpt import "$T/in.safetensors" "$T/c8" --step 7
launch 2 check "$T/c8" --layout a --saved-world 1 --job-id some-run
echo "ok: an import without --job-id loads into a run with a job id"

# ---- bad input
head -c 1000 "$T/in.safetensors" > "$T/trunc.safetensors"
expect_rc 1 "$T/e" "$DTRAIN" ckpt import "$T/trunc.safetensors" "$T/c8"
has "$T/e" "trunc\.safetensors: .*(truncated|past the data section|file ends)"
"$PY" "$T/st.py" write-i8 "$T/i8.safetensors"
expect_rc 1 "$T/e" "$DTRAIN" ckpt import "$T/i8.safetensors" "$T/c8"
has "$T/e" "tensor 'x' has dtype I8"
expect_rc 2 "$T/e" "$DTRAIN" ckpt verify "$C" --bogus
has "$T/e" "unknown flag '--bogus'"
expect_rc 2 "$T/e" "$DTRAIN" ckpt inspect "$C" --step abc
has "$T/e" "--step 'abc' is not a step number"
expect_rc 2 "$T/e" "$DTRAIN" ckpt export "$C"
has "$T/e" "missing the output file"
expect_rc 2 "$T/e" "$DTRAIN" ckpt frobnicate
has "$T/e" "unknown command 'frobnicate'"
expect_rc 1 "$T/e" "$DTRAIN" ckpt ls "$T/nonexistent"
has "$T/e" "nonexistent"
expect_rc 1 "$T/e" "$DTRAIN" ckpt inspect "$C" --step 150
has "$T/e" "no step 150"
for c in ls verify inspect export import; do
  expect_rc 0 "$T/e" "$DTRAIN" ckpt "$c" --help
  has "$T/e" "^usage: dtrain ckpt $c"
done
expect_rc 0 "$T/e" "$DTRAIN" ckpt --help
echo "ok: bad input"
echo "PASS"
