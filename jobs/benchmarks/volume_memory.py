"""Memory on the 3-D demo: the driver's and each Ray worker's peak resident memory during
`medray run --config configs/demo_3d.yaml`, against the size of a whole split of decoded volumes.

    python jobs/benchmarks/volume_memory.py                          # 64^3, 360/90/120 volumes, 2 epochs
    python jobs/benchmarks/volume_memory.py --size 32 --epochs 12 --check-sample 48   # the demo as shipped

A 64^3 volume is 256 KiB as uint8 (what read tasks decode to) and 1 MiB as float32 (the model's
input): the demo's 360 train volumes are 90 MiB and 360 MiB. This script starts a local Ray cluster
of its own, writes the phantoms (`medray data synth --volumes`), then runs two drivers on that
cluster, each a child process, while a thread reads /proc every --interval seconds for every process
descended from this one:
  idle driver  imports medray's run (TensorFlow included), connects to the cluster and waits: the
               plain reference, what any driver costs before it does any work
  demo driver  `medray run` on the demo (train on 2 Ray Train workers, predict, explain, report)
and the Ray worker processes (titles `ray::...`: Ray Data read and map tasks, the Train workers, the
CAM actors; a worker process runs many of these over its life). Per process: peak VmRSS and peak
RssAnon (its private memory: VmRSS also counts pages of Ray's shared-memory object store the
process has read, which belong to the store). Nothing is asserted; every figure is from this run.
If the driver held a split of volumes, its private peak would exceed the idle driver's by at least
that split's size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 2 ** 20
IDLE_DRIVER = ("import time, ray; from medray.cluster import connect; from medray.config import validate_config; "
               "import medray.run; connect(validate_config({'data': {'path': '.'}}).scaling); time.sleep({wait})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="voxels a side, of the phantoms and the model input")
    parser.add_argument("--train", type=int, default=360)
    parser.add_argument("--val", type=int, default=90)
    parser.add_argument("--test", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--check-sample", type=int, default=0,
                        help="explain.check_sample (the demo's 48 retrains the model 5 epochs for label randomisation)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between /proc samples")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()

    import ray

    from medray.cluster import connect
    from medray.config import validate_config
    from medray.data.synth_volumes import VOLUMES_FILE, write_volume_dataset

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="volume-memory-"))
    started = time.perf_counter()
    write_volume_dataset(work / "data", train=args.train, val=args.val, test=args.test, size=args.size, seed=0)
    print(f"phantoms {args.size}^3 ({args.train}/{args.val}/{args.test}) written in "
          f"{time.perf_counter() - started:.0f} s to {work / 'data'}")
    connect(validate_config({"data": {"path": str(work)}}).scaling)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    print(f"machine: {os.cpu_count()} CPUs, shared with other work; Ray {ray.__version__}, cluster "
          f"{ray.cluster_resources().get('CPU', 0):.0f} CPUs, object store "
          f"{ray.cluster_resources().get('object_store_memory', 0) / MIB:.0f} MiB")

    idle = measure([sys.executable, "-c", IDLE_DRIVER.replace("{wait}", "5")], env, args.interval, work / "idle.log")
    side = f"[{args.size},{args.size},{args.size}]"
    demo = [str(Path(sys.executable).parent / "medray"), "run", "--config", str(ROOT / "configs" / "demo_3d.yaml")]
    for override in (f"data.path={work / 'data' / VOLUMES_FILE}", f"model.input_size={side}",
                     f"train.epochs={args.epochs}", f"explain.check_sample={args.check_sample}",
                     f"output.dir={work / 'results'}", "output.run_id=memory"):
        demo += ["--set", override]
    run = measure(demo, env, args.interval, work / "demo.log")
    report(args, idle, run, work)


def measure(command: list[str], env: dict, interval: float, log: Path) -> dict:
    """Run `command` as a child; sample /proc until it exits. Returns the child's pid, its seconds
    and, per process below this one, {"rss", "anon", "titles"} at their peaks."""
    with open(log, "w") as output:
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
        peaks: dict[int, dict] = {}
        done = threading.Event()

        def sample():
            while not done.is_set():
                for pid in descendants(os.getpid()):
                    facts = process_facts(pid)
                    if facts is None:
                        continue
                    peak = peaks.setdefault(pid, {"rss": 0, "anon": 0, "titles": Counter()})
                    peak["rss"], peak["anon"] = max(peak["rss"], facts["rss"]), max(peak["anon"], facts["anon"])
                    peak["titles"][facts["title"]] += 1
                time.sleep(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        code = child.wait()
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
    if code != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed ({code}); see {log}")
    return {"pid": child.pid, "seconds": elapsed, "peaks": peaks, "log": log}


def descendants(root: int) -> list[int]:
    """Every process below `root` (its children, theirs, ...), from /proc/*/stat's parent ids."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # the field after the parenthesised command name: state, then the parent's pid
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    below, frontier = [], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        below += frontier
    return below


def process_facts(pid: int) -> dict | None:
    """VmRSS and RssAnon (bytes) and the process title (Ray workers set `ray::<task or actor>`)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            words = cmdline.read().split(b"\0")
    except OSError:
        return None
    if "VmRSS" not in fields:  # a zombie
        return None
    title = words[0].decode(errors="replace").strip()
    if not title.startswith("ray::"):
        title = " ".join(Path(word.decode(errors="replace")).name for word in words[:2])
    return {"rss": int(fields["VmRSS"].split()[0]) * 1024, "anon": int(fields["RssAnon"].split()[0]) * 1024,
            "title": title[:60]}


def report(args, idle: dict, run: dict, work: Path) -> None:
    voxels = args.size ** 3
    split_sizes = {split: count * voxels for split, count in
                   (("train", args.train), ("val", args.val), ("test", args.test))}
    print(f"\nsplits of decoded volumes at {args.size}^3: " + ", ".join(
        f"{split} {count / MIB:.0f} MiB uint8 / {4 * count / MIB:.0f} MiB float32"
        for split, count in split_sizes.items()))
    idle_driver, driver = idle["peaks"][idle["pid"]], run["peaks"][run["pid"]]
    print(f"\n{'process':<44} {'peak VmRSS':>11} {'peak RssAnon':>13}")
    print(f"{'idle driver (imports, connects; reference)':<44} {idle_driver['rss'] / MIB:>7.0f} MiB "
          f"{idle_driver['anon'] / MIB:>9.0f} MiB")
    print(f"{'demo driver (medray run)':<44} {driver['rss'] / MIB:>7.0f} MiB {driver['anon'] / MIB:>9.0f} MiB"
          f"   {run['seconds']:.0f} s")
    growth = driver["anon"] - idle_driver["anon"]
    print(f"demo driver's private peak over the idle driver's: {growth / MIB:.0f} MiB; the train split alone "
          f"is {split_sizes['train'] / MIB:.0f} MiB uint8, {4 * split_sizes['train'] / MIB:.0f} MiB float32 "
          f"(growth / train split float32 = {growth / (4 * split_sizes['train']):.2f})")
    workers = {pid: peak for pid, peak in run["peaks"].items()
               if pid != run["pid"] and any(title.startswith("ray::") for title in peak["titles"])}
    print(f"\nRay worker processes during the demo ({len(workers)}), by peak RssAnon; titles seen, most sampled first")
    print(f"{'pid':>8} {'peak VmRSS':>11} {'peak RssAnon':>13}  roles")
    for pid, peak in sorted(workers.items(), key=lambda item: -item[1]["anon"]):
        roles = ", ".join(title.removeprefix("ray::") for title, _ in peak["titles"].most_common(4)
                          if title.startswith("ray::"))
        print(f"{pid:>8} {peak['rss'] / MIB:>7.0f} MiB {peak['anon'] / MIB:>9.0f} MiB  {roles}")
    system = [peak for pid, peak in run["peaks"].items() if pid != run["pid"] and pid not in workers]
    print(f"Ray's own processes (gcs, raylet, dashboard, ...): {len(system)}, peaks summed "
          f"{sum(peak['rss'] for peak in system) / MIB:.0f} MiB VmRSS")
    summary = [line for line in run["log"].read_text().splitlines()
               if line.strip().startswith("test ") and "accuracy" in line or "pointing game" in line][:2]
    print("\nthe demo's summary: " + (" | ".join(line.strip() for line in summary) or f"see {run['log']}"))


if __name__ == "__main__":
    main()
