#!/usr/bin/python3
"""Every example in README.md, docs/*.md and recipes/*.md, run: tests/integration/test_doc_examples.sh.

What counts, in code blocks (fenced, or indented 4 spaces after a blank line):
- a `dtrain ...` command (also `$ dtrain`, `./build/bin/dtrain`, after `ENV=value` words, at the end of
  an `a && b && dtrain ...` chain, several on one line separated by ", "): run in a sandbox where the
  paths the docs use exist (recipes/, runs/<recipe>/checkpoints of short real runs, /ckpt/..., /tmp/...
  mapped under the sandbox). `run`, `launch`, `store` and `sbatch` run with --dry-run (they check
  everything and start nothing; sbatch prints the job script); `ckpt` commands and --help/--version run
  as written. Each must exit 0. Lines `dtrain error: ...`/`dtrain warning: ...` are quoted messages.
- a synopsis (placeholders such as RECIPE, DIR, [--step N], a|b, ...): the command must exist and every
  --flag it shows must be in its --help.
- a recipe fragment (YAML whose top-level keys are recipe sections): written to a recipe file beside
  the sandbox's data and checked with `dtrain run FILE --dry-run`; data files it names are created.
- a block under a heading "`dtrain ... --help`" (docs/cli.md): must equal that command's output.
A command line that fits none of these fails the test, so a new kind of example cannot go unchecked.
usage: doc_examples.py SRC DTRAIN SANDBOX"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

SRC, DTRAIN, BOX = sys.argv[1], sys.argv[2], sys.argv[3]
SECTIONS = {"job", "launch", "parallel", "model", "data", "train", "checkpoint"}
ROOTS = ("/ckpt/", "/tmp/", "/data/")  # example absolute paths, mapped under BOX/root
failures, counts = [], {}


def note(kind):
    counts[kind] = counts.get(kind, 0) + 1


def blocks(path):
    """(line number, heading, [lines]) of every code block, dedented."""
    lines = open(path).read().split("\n")
    out, heading, i = [], "", 0
    while i < len(lines):
        l = lines[i]
        if l.startswith("#"):
            heading = l
        if l.strip().startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            ind = len(l) - len(l.lstrip())
            out.append((i + 2, heading, [x[ind:] for x in lines[i + 1:j]]))
            i = j + 1
            continue
        if l.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            body = lines[i:j]
            while body and not body[-1].strip():
                body.pop()
            out.append((i + 1, heading, [x[4:] for x in body]))
            i = j
            continue
        i += 1
    return out


def run(cmd, env=None, cwd=None, timeout=120):
    e = dict(os.environ)
    e.update(env or {})
    try:
        p = subprocess.run(cmd, cwd=cwd or BOX, env=e, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout} s"


def strip_comment(s):
    out, q = [], None
    for k, c in enumerate(s):
        if q:
            q = None if c == q else q
        elif c in "'\"":
            q = c
        elif c == "#" and (k == 0 or s[k - 1] in " \t"):
            break
        out.append(c)
    return "".join(out).rstrip()


def commands(block):
    """The dtrain command lines of a block (continuations joined, comments and prompts dropped)."""
    joined, cur = [], ""
    for l in block:
        cur += l.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        joined.append(cur)
        cur = ""
    out = []
    for l in joined:
        l = strip_comment(l.strip())
        if l.startswith("$ "):
            l = l[2:]
        if "&&" in l:
            l = l.split("&&")[-1].strip()
        l = re.split(r"\s&(\s|$)", l)[0]  # `dtrain ... & pid=$!`: the command before the &
        for part in re.split(r",\s+(?=dtrain\b)", l):
            words = part.split()
            k = 0
            while k < len(words) and re.match(r"^[A-Z_][A-Z0-9_]*=", words[k]):
                k += 1
            if k + 1 < len(words) and words[k + 1] in ("error:", "warning:"):
                continue  # a message dtrain prints, quoted as it appears
            if k < len(words) and re.match(r"^(\./build/bin/)?dtrain$", words[k]):
                out.append(part)
    return out


PLACEHOLDER = re.compile(r"^\[|\]$|\||\.\.\.|^[A-Z][A-Z0-9_]*([./]|$)|^\{")


def is_synopsis(words):
    return any(PLACEHOLDER.search(w) for w in words if not re.match(r"^[A-Z_][A-Z0-9_]*=", w))


def help_of(words):
    """The --help text of the (sub)command a command line names."""
    sub = words[:1] if words and not words[0].startswith("-") else []
    if sub == ["ckpt"] and len(words) > 1 and not words[1].startswith("-") and "|" not in words[1]:
        sub = words[:2]
    return run([DTRAIN] + sub + ["--help"])


def map_path(w):
    for r in ROOTS:
        if w.startswith(r):
            p = os.path.join(BOX, "root", w.lstrip("/"))
            os.makedirs(os.path.dirname(p.rstrip("/")), exist_ok=True)
            return p
    return w


def check_command(where, line):
    try:
        words = shlex.split(line)
    except ValueError as e:
        failures.append(f"{where}: cannot split '{line}': {e}")
        return
    env = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = "doc-example" if v in ("...", "") else v
    words = words[1:]  # dtrain
    if is_synopsis(words):
        note("synopsis")
        rc, text = help_of(words)
        if rc != 0:
            failures.append(f"{where}: synopsis '{line}': `dtrain {' '.join(words[:2])} --help` exits {rc}")
            return
        for f in re.findall(r"--[a-z][a-z-]*", line):
            if f not in text:
                failures.append(f"{where}: synopsis '{line}': {f} is not in its --help")
        return
    words = [map_path(w) for w in words]
    if not words or words[0] in ("--help", "-h", "--version") or "--help" in words:
        note("help")
        cmd = words
    elif words[0] in ("run", "sbatch"):
        note(words[0] + " --dry-run")
        cmd = words + ([] if "--dry-run" in words else ["--dry-run"])
    elif words[0] == "launch":
        note("launch --dry-run")
        cmd = ["launch", "--dry-run"] + words[1:]
    elif words[0] == "store":
        note("store --dry-run")
        cmd = words + ["--dry-run"]
    elif words[0] == "ckpt":
        note("ckpt " + (words[1] if len(words) > 1 else ""))
        cmd = words
    else:
        failures.append(f"{where}: '{line}': no rule to check a `dtrain {words[0]}` example")
        return
    rc, text = run([DTRAIN] + cmd, env)
    if rc != 0 and "--nproc-per-node gpu: no GPU found" in text:
        # this machine has no GPU: the rest of the line is checked with one rank
        note("gpu example as 1 rank")
        cmd = ["1" if w == "gpu" and cmd[k - 1] == "--nproc-per-node" else w for k, w in enumerate(cmd)]
        rc, text = run([DTRAIN] + cmd, env)
    if rc == 2 and NO_GPU_HERE in text and not gpu_visible():
        note("cuda example refused: no GPU here")
        return
    if rc != 0:
        failures.append(f"{where}: '{line}' ({' '.join(cmd)}) exits {rc}: {text.strip()[-600:]}")


# `dtrain run --dry-run` refuses train.device cuda where no CUDA device is visible (exit 2, this message):
# on such a machine that refusal is the right answer, and only that one.
NO_GPU_HERE = "train.device=cuda: no CUDA device is visible on this machine"


def gpu_visible():
    return re.search(r"GPUs visible: [1-9]", run([DTRAIN, "--version"])[1]) is not None


def check_recipe(where, block, n):
    text = "\n".join(strip_comment(l) for l in block) + "\n"
    path = os.path.join(BOX, f"example_{n}.yaml")
    open(path, "w").write(text)
    for m in re.finditer(r"path:\s*([\w./-]+)", text):
        f = os.path.join(BOX, m.group(1))
        if not os.path.exists(f):
            shutil.copy(os.path.join(SRC, "recipes/data/public-domain.txt"), f)
    note("recipe fragment")
    rc, out = run([DTRAIN, "run", path, "--dry-run"])
    if "device: cuda" in text and "cuda" not in run([DTRAIN, "--version"])[1]:
        if rc != 2 or "built without CUDA" not in out:
            failures.append(f"{where}: a cuda fragment in a build without CUDA: exit {rc}: {out[-300:]}")
        return
    if rc == 2 and NO_GPU_HERE in out and not gpu_visible():
        note("cuda fragment refused: no GPU here")
        return
    if rc != 0:
        failures.append(f"{where}: recipe fragment (as {path}) fails its --dry-run: {out.strip()[-600:]}")


def is_recipe(block):
    keys, body = set(), [strip_comment(l) for l in block if strip_comment(l).strip()]
    for l in body:
        if re.match(r"^[a-z_]+:", l):
            keys.add(l.split(":")[0])
        elif not l.startswith("  "):
            return False
    return bool(keys) and keys <= SECTIONS


def main():
    files = [os.path.join(SRC, "README.md")] + sorted(glob.glob(os.path.join(SRC, "docs", "*.md"))) + \
        sorted(glob.glob(os.path.join(SRC, "recipes", "**", "*.md"), recursive=True))
    n = 0
    for path in files:
        rel = os.path.relpath(path, SRC)
        for line, heading, block in blocks(path):
            where = f"{rel}:{line}"
            m = re.match(r"^#+ `(dtrain[^`]*--help)`", heading)
            if m and block and block[0].startswith("usage:"):
                note("help text")
                rc, out = run(shlex.split(m.group(1).replace("dtrain", DTRAIN, 1)))
                want = [l.rstrip() for l in out.rstrip("\n").split("\n")]
                have = [l.rstrip() for l in block]
                if rc != 0 or want != have:
                    diff = next((f"line {k + 1}: docs '{a}', {m.group(1)} '{b}'" for k, (a, b) in
                                 enumerate(zip(have + [""] * 99, want + [""] * 99)) if a != b), "")
                    failures.append(f"{where}: the {m.group(1)} text differs from the program's: {diff}")
                continue
            if is_recipe(block):
                n += 1
                check_recipe(where, block, n)
                continue
            for c in commands(block):
                check_command(where, c)
        # commands quoted inline in the prose: the complete ones (a recipe or a path, or --help)
        for k, l in enumerate(open(path).read().split("\n")):
            for c in re.findall(r"`((?:\./build/bin/)?dtrain [^`]+)`", l):
                w = c.split()
                if (len(w) > 2 and w[1] in ("run", "ckpt") and any(".yaml" in x or "/" in x for x in w[2:])) or \
                        w[-1] in ("--help", "--version"):
                    note("inline")
                    check_command(f"{rel}:{k + 1}", c)
    print("checked: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if failures:
        print("\n".join("FAIL: " + f for f in failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
