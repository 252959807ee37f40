#!/usr/bin/env python3
"""resilience.py — dtrain under injected faults, on three network-namespace nodes of this machine (each
agent in its own IPC and UTS namespace, so a cut link cuts every path): how long each fault takes to be
noticed and how long until training steps again, and a soak. Needs root. Run by hand, not by ctest.

    sudo bench/resilience.py figures [--trials 5] [--json FILE]
        --trials faults of each kind into one running 3-node gpt-tiny job (`dtrain run`, --nnodes 2:3,
        every rank's progress lines time-stamped as they arrive):
          kill9_worker    kill -9 of a training rank
          sigstop_worker  SIGSTOP of a training rank (--worker-timeout 3)
          kill9_agent     kill -9 of an agent that does not host the store
          link_down       a node that does not host the store loses its link
          store_host      kill -9 of the agent that hosts the store (the standby takes over)
        detection = fault -> the first agent line that names it; recovery = fault -> the first training
        step after the restart. After a node fault the node is brought back (its agent restarted with the
        store's address of the moment, or its link restored) and the job grows back to 3 nodes before the
        next fault. Then torchrun beside `dtrain launch` on one node: a crashed rank of the same small
        PyTorch job (gloo), fault -> the first step after the restart (torch_steps.py).
    sudo bench/resilience.py soak [--minutes 5] [--fixed [--steps 50000]] [--json FILE]
        a random fault every 10-20 s. --fixed: worker faults only (kill -9, SIGSTOP) into a 3-node job of a
        fixed number of steps, which must end with the uninterrupted run's weights (its digest, from a run
        beside it); otherwise every kind, and the job (--nnodes 2:3, growing back after each node fault)
        must still be training. Reports detection and recovery per kind and the goodput: steps per second
        with faults against a fault-free stretch of the same job.

Exit status 0, or 1 when a fault went unnoticed, training did not come back, or (--fixed) the weights
differ. Figures in docs/resilience.md come from this script.
"""
import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = re.compile(r"^\[\d+:\d+\] step +(\d+)/")
DETECT = re.compile(r"stopping the workers of every node|lost the rendezvous store|stopped heartbeating|"
                    r"made no progress")


def sh(*args, check=True):
    return subprocess.run(args, check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout


class Cluster:
    """N network namespaces on a bridge (the shape of tests/cluster/netns.sh), one agent per node."""

    def __init__(self, n, subnet="10.214.0"):
        self.n, self.subnet = n, subnet
        self.prefix = "dtrb%d" % os.getpid()
        self.switch = self.prefix + "s"
        self.nodes = [self.prefix + "n%d" % k for k in range(n)]
        self.lines = []  # (time, node, text), every agent's output as it arrived
        self.lock = threading.Lock()
        self.agents = {}  # node -> Popen of its agent
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for k, ns in enumerate(self.nodes):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.switch, "link", "add", "p%d" % k, "type", "veth", "peer", "name", "veth0", "netns", ns)
            sh("ip", "-n", self.switch, "link", "set", "p%d" % k, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", "%s/24" % self.addr(k), "dev", "veth0")
            sh("ip", "-n", ns, "link", "set", "veth0", "up")

    def addr(self, k):
        return "%s.%d" % (self.subnet, k + 1)

    def node_of(self, addr):
        return int(addr.rsplit(".", 1)[1]) - 1

    def spawn(self, k, argv, env):
        p = subprocess.Popen(["ip", "netns", "exec", self.nodes[k], "unshare", "--ipc", "--uts", "--", "bash", "-c",
                              'hostname "$0" && exec "$@"', "node%d" % k] + argv, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.agents[k] = p
        threading.Thread(target=self._read, args=(k, p), daemon=True).start()
        return p

    def _read(self, k, p):
        for raw in p.stdout:
            t = time.time()
            with self.lock:
                self.lines.append((t, k, raw.decode(errors="replace").rstrip("\n")))

    def pids(self, k):
        return [int(x) for x in sh("ip", "netns", "pids", self.nodes[k], check=False).split()]

    def worker_pid(self, k):
        for p in self.pids(k):
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    if b"\0train\0" in f.read():
                        return p
            except OSError:
                pass
        return None

    def link(self, k, up):
        sh("ip", "-n", self.switch, "link", "set", "p%d" % k, "up" if up else "down")

    def since(self, t0, pattern, nodes=None):
        with self.lock:
            return [(t, k, s) for t, k, s in self.lines if t > t0 and (nodes is None or k in nodes) and pattern.search(s)]

    def wait_for(self, t0, pattern, timeout, nodes=None):
        end = time.time() + timeout
        while time.time() < end:
            hit = self.since(t0, pattern, nodes)
            if hit:
                return hit[0]
            time.sleep(0.02)
        return None

    def close(self):
        for p in self.agents.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.time() + 10
        for p in self.agents.values():
            try:
                p.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
        for ns in self.nodes + [self.switch]:
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            sh("ip", "netns", "del", ns, check=False)


RECIPE = """job: {name: resilience, seed: 1337}
model: {block_size: 16, n_layer: 2, n_head: 4, n_embd: 64}
data: {kind: addition, digits: 3}
train: {steps: STEPS, global_batch: 96, micro_batch: 16, lr: 5.0e-3, min_lr: 3.0e-4, warmup_steps: 50,
        log_every: 1, threads: 1}
checkpoint: {every: 50, keep: 3}
"""


class Job:
    """A `dtrain run` of the recipe on every node of a cluster."""

    def __init__(self, cl, tmp, dtrain, steps, nnodes, port, tag):
        self.cl, self.dtrain, self.nnodes, self.tag = cl, dtrain, nnodes, tag
        self.recipe = os.path.join(tmp, tag + ".yaml")
        with open(self.recipe, "w") as f:
            f.write(RECIPE.replace("STEPS", str(steps)))
        self.run_dir = os.path.join(tmp, "run-" + tag)
        self.endpoint = "%s:%d" % (cl.addr(0), port)
        self.env = dict(os.environ, DTRAIN_JOB_TOKEN="resilience-%d" % os.getpid())

    def start(self, k):
        argv = [self.dtrain, "run", self.recipe, "--nnodes", self.nnodes, "--rdzv-endpoint", self.endpoint,
                "--rdzv-id", self.tag, "--rdzv-timeout", "120", "--max-restarts", "1000", "--grace-period", "1",
                "--worker-timeout", "3", "job.run_dir=" + self.run_dir]
        return self.cl.spawn(k, argv, self.env)

    def start_all(self):
        for k in range(self.cl.n):
            self.start(k)
            if k == 0:
                time.sleep(0.5)  # node 0 hosts the store at first

    def store(self):
        """(endpoint, node) of the store now: what its host said at the last round it formed."""
        said = self.cl.since(0, re.compile(r"the store at (\S+):(\d+) \(epoch \d+\) is mirrored"))
        if not said:
            return self.endpoint, 0
        m = re.search(r"the store at (\S+):(\d+) \(epoch", said[-1][2])
        return "%s:%s" % (m.group(1), m.group(2)), self.cl.node_of(m.group(1))

    def steady(self, timeout=120):
        """Wait until the last round has every node and training steps; returns its start time."""
        end = time.time() + timeout
        rounds = re.compile(r"attempt (\d+): node \d+ of (\d+)")
        while time.time() < end:
            hits = self.cl.since(0, rounds)
            if hits:
                last = max(int(rounds.search(s).group(1)) for _, _, s in hits)
                mine = [(t, k, s) for t, k, s in hits if int(rounds.search(s).group(1)) == last]
                full = len({k for _, k, _ in mine}) == self.cl.n and all(
                    rounds.search(s).group(2) == str(self.cl.n) for _, _, s in mine)
                t_round = max(t for t, _, _ in mine)
                if full and len(self.cl.since(t_round, STEP)) >= 20:
                    return t_round
            time.sleep(0.1)
        raise RuntimeError("the job did not come back to %d nodes within %d s" % (self.cl.n, timeout))

    def respawn(self, k, wait_s=0):
        """Bring node k's agent back, pointed at the store of the moment, unless it is still running after
        wait_s (a node whose link came back rejoins by itself)."""
        p = self.cl.agents.get(k)
        end = time.time() + wait_s
        while p and p.poll() is None and time.time() < end:
            time.sleep(0.1)
        if p and p.poll() is None:
            return
        self.endpoint, _ = self.store()
        self.start(k)


def inject(job, kind, rng):
    """Inject one fault; returns (fault time, the nodes expected to notice it, how to restore)."""
    cl = job.cl
    _, store_node = job.store()
    others = [k for k in range(cl.n) if k != store_node]
    if kind in ("kill9_worker", "sigstop_worker"):
        k = rng.randrange(cl.n)
        pid = cl.worker_pid(k)
        if pid is None:
            raise RuntimeError("node %d runs no worker" % k)
        t = time.time()
        os.kill(pid, signal.SIGKILL if kind == "kill9_worker" else signal.SIGSTOP)
        return t, list(range(cl.n)), None
    if kind == "kill9_agent":
        k = rng.choice(others)
        t = time.time()
        cl.agents[k].kill()
        return t, [x for x in range(cl.n) if x != k], lambda: job.respawn(k)
    if kind == "link_down":
        k = rng.choice(others)
        t = time.time()
        cl.link(k, False)

        def restore():
            cl.link(k, True)
            job.respawn(k, 30)  # it rejoins by itself, or it stopped as a minority: then bring it back

        return t, [x for x in range(cl.n) if x != k], restore
    if kind == "store_host":
        k = store_node
        t = time.time()
        cl.agents[k].kill()
        return t, [x for x in range(cl.n) if x != k], lambda: job.respawn(k)
    raise ValueError(kind)


def trial(job, kind, rng):
    t0 = job.steady()
    time.sleep(rng.uniform(0.2, 1.0))  # somewhere within a step, not right after the round began
    t_f, watchers, restore = inject(job, kind, rng)
    det = job.cl.wait_for(t_f, DETECT, 30, watchers)
    if det is None:
        raise RuntimeError("%s: nobody noticed the fault within 30 s" % kind)
    # the first step of the round that follows (a line of the old round may still be in flight)
    again = job.cl.wait_for(det[0], re.compile(r"attempt \d+: node"), 60, watchers)
    step = again and job.cl.wait_for(again[0], STEP, 60)
    if not step:
        raise RuntimeError("%s: no training step within 60 s of the detection" % kind)
    if restore:
        restore()
    return {"kind": kind, "detect_s": det[0] - t_f, "recover_s": step[0] - t_f, "noticed_by": det[2][:160],
            "t0": t0}


def summarize(results):
    out = {}
    for kind in sorted({r["kind"] for r in results}):
        d = [r["detect_s"] for r in results if r["kind"] == kind]
        c = [r["recover_s"] for r in results if r["kind"] == kind]
        out[kind] = {"trials": len(d), "detect_median_s": statistics.median(d), "detect_max_s": max(d),
                     "recover_median_s": statistics.median(c), "recover_max_s": max(c)}
    return out


def print_table(summary, title):
    print("\n%s" % title)
    print("%-16s %6s %14s %11s %15s %12s" % ("fault", "trials", "detect median", "detect max", "recover median",
                                            "recover max"))
    for kind, s in summary.items():
        print("%-16s %6d %13.3fs %10.3fs %14.3fs %11.3fs" % (kind, s["trials"], s["detect_median_s"],
                                                          s["detect_max_s"], s["recover_median_s"],
                                                          s["recover_max_s"]))


def torch_one_node(dtrain, trials, tmp):
    """torchrun beside dtrain launch, one node, 2 ranks: a crashed rank, fault -> first step after restart."""
    out = {}
    script = os.path.join(SRC, "bench", "torch_steps.py")
    for name in ("torchrun", "dtrain"):
        rec = []
        for i in range(trials):
            stamps = os.path.join(tmp, "%s-%d.stamps" % (name, i))
            args = ["--stamps", stamps, "--steps", "300", "--crash-rank", "1", "--crash-step", "60"]
            if name == "torchrun":
                # torch 1.13's torchrun spells its flags with underscores, and crashes on Python 3.11
                # unless its redirects are given (as bench/launch_vs_anchors.sh found)
                cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "--max_restarts", "1",
                       "--monitor_interval", "0.1", "-r", "1", "-t", "1",
                       "--log_dir", os.path.join(tmp, "torchrun-logs-%d" % i), script] + args
            else:
                cmd = [dtrain, "launch", "--nproc-per-node", "2", "--max-restarts", "1", "--",
                       "/usr/bin/python3", script] + args
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError("%s exited %d: %s" % (name, r.returncode, r.stdout[-2000:]))
            crash, first = None, None
            for line in open(stamps):
                rank, restart, ns, what = line.split()[:4]
                if what == "crash":
                    crash = int(ns)
                elif what == "step" and restart != "0" and (first is None or int(ns) < first):
                    first = int(ns)
            rec.append((first - crash) / 1e9)
        out[name] = {"trials": trials, "recover_median_s": statistics.median(rec), "recover_max_s": max(rec)}
    return out


def digest(run_dir):
    try:
        for line in open(os.path.join(run_dir, "summary.txt")):
            if line.startswith("weights_xxh64="):
                return line.strip().split("=", 1)[1]
    except OSError:
        pass
    return None


def goodput(job, t_a, t_b):
    """Training steps per second between two times: the highest step reached minus the one at t_a
    (restarted steps are counted once: useful progress)."""
    def step_at(t):
        best = 0
        for tt, _, s in job.cl.since(0, STEP):
            if tt <= t:
                best = max(best, int(STEP.search(s).group(1)))
        return best
    return (step_at(t_b) - step_at(t_a)) / (t_b - t_a)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["figures", "soak"])
    ap.add_argument("--build", default=os.environ.get("DTRAIN_BUILD", os.path.join(SRC, "build")))
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--fixed", action="store_true")
    ap.add_argument("--steps", type=int, default=50000, help="--fixed: the job's steps (about 6 ms each here)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clean", type=float, default=60, help="soak: seconds without faults first, the goodput's baseline")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-only", action="store_true", help="figures: only torchrun beside dtrain, one node")
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("resilience.py: needs root (network namespaces)")
    dtrain = os.path.join(args.build, "bin", "dtrain")
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="dtrain-resilience.")
    report = {"mode": args.mode, "tmp": tmp}
    ok = True
    cl = Cluster(3)
    try:
        if args.mode == "figures" and args.torch_only:
            cl.close()
            cl = None
            report["one_node"] = torch_one_node(dtrain, args.trials, tmp)
            for name, s in report["one_node"].items():
                print("%-10s %d trials: median %.3f s, max %.3f s" % (name, s["trials"], s["recover_median_s"],
                                                                       s["recover_max_s"]))
        elif args.mode == "figures":
            job = Job(cl, tmp, dtrain, 1000000, "2:3", 29810, "fig")
            job.start_all()
            results = []
            for kind in ("kill9_worker", "sigstop_worker", "kill9_agent", "link_down", "store_host"):
                for i in range(args.trials):
                    r = trial(job, kind, rng)
                    print("%-15s trial %d: noticed after %.3f s, training again after %.3f s" % (
                        kind, i + 1, r["detect_s"], r["recover_s"]), flush=True)
                    results.append(r)
            report["results"] = results
            report["summary"] = summarize(results)
            print_table(report["summary"], "3 namespace nodes x 1 rank, gpt-tiny (dtrain run, --nnodes 2:3, "
                        "--worker-timeout 3, heartbeat timeout 2.5 s)")
            if not args.no_torch:
                cl.close()
                cl = None
                report["one_node"] = torch_one_node(dtrain, args.trials, tmp)
                print("\none node, 2 ranks of torch_steps.py (gloo), a rank crashed: fault -> first step after the restart")
                for name, s in report["one_node"].items():
                    print("%-10s %d trials: median %.3f s, max %.3f s" % (name, s["trials"], s["recover_median_s"],
                                                                           s["recover_max_s"]))
        else:
            steps = args.steps if args.fixed else 1000000
            if args.fixed:  # the uninterrupted reference, on a cluster of its own first
                ref = Job(cl, tmp, dtrain, steps, "3", 29820, "ref")
                ref.start_all()
                for p in list(cl.agents.values()):
                    p.wait(1800)
                report["reference_digest"] = digest(ref.run_dir)
                cl.close()
                cl = Cluster(3)
            job = Job(cl, tmp, dtrain, steps, "3" if args.fixed else "2:3", 29830, "soak")
            job.start_all()
            t_clean = job.steady()
            time.sleep(args.clean)  # a fault-free stretch for the goodput's baseline
            report["clean_steps_per_s"] = goodput(job, t_clean, time.time())
            kinds = ["kill9_worker", "sigstop_worker"] if args.fixed else [
                "kill9_worker", "sigstop_worker", "kill9_agent", "link_down", "store_host"]
            t_start, results = time.time(), []
            end = t_start + args.minutes * 60
            while time.time() < end:
                time.sleep(rng.uniform(10, 20) - 5)  # trial() waits for a steady job, about 5 s more
                if args.fixed and all(p.poll() is not None for p in cl.agents.values()):
                    break
                kind = rng.choice(kinds)
                r = trial(job, kind, rng)
                print("%6.0f s  %-15s noticed after %.3f s, training again after %.3f s" % (
                    time.time() - t_start, kind, r["detect_s"], r["recover_s"]), flush=True)
                results.append(r)
            t_stop = time.time()
            report["faulty_steps_per_s"] = goodput(job, t_start, t_stop)
            report["minutes"] = (t_stop - t_start) / 60
            report["results"] = results
            report["summary"] = summarize(results)
            print_table(report["summary"], "soak: %d faults in %.1f min" % (len(results), report["minutes"]))
            print("goodput: %.1f steps/s with faults, %.1f without (%.0f%%)" % (
                report["faulty_steps_per_s"], report["clean_steps_per_s"],
                100 * report["faulty_steps_per_s"] / report["clean_steps_per_s"]))
            if args.fixed:
                for p in list(cl.agents.values()):
                    p.wait(1800)
                report["digest"] = digest(job.run_dir)
                same = report["digest"] is not None and report["digest"] == report["reference_digest"]
                print("final weights %s, uninterrupted run's %s: %s" % (report["digest"], report["reference_digest"],
                                                                        "EQUAL" if same else "DIFFERENT"))
                ok = ok and same
            else:
                alive = sum(1 for p in cl.agents.values() if p.poll() is None)
                print("the job is still training on %d nodes" % alive)
                ok = ok and alive == 3
    except Exception as e:  # a fault went unnoticed, or training did not come back
        print("resilience.py: FAILED: %s (logs in %s)" % (e, tmp))
        ok = False
    finally:
        if cl:
            with open(os.path.join(tmp, "agents.log"), "w") as f:
                for t, k, s in cl.lines:
                    f.write("%.3f node%d %s\n" % (t, k, s))
            cl.close()
    report["ok"] = ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
