"""What the benchmark scripts share: the machine and load lines, argument
types, and printing and writing one section of BENCHMARKS.md."""

import argparse
import importlib.metadata
import os
import pathlib
import platform
import statistics

PACKAGES = ("tensorflow", "keras", "ai-edge-litert")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def cpu_flags():
    """`"AMD EPYC 7B13, with AVX-512"`: the CPU's model and whether it has
    AVX-512 (the same run differs between CPUs with and without it)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read().splitlines()
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((x for x in info if x.startswith("flags")), "").split()
        cpu += ", with AVX-512" if "avx512f" in flags else ", no AVX-512"
    except OSError:
        pass
    return cpu


def machine(packages=PACKAGES):
    """`"2 CPU cores (AMD EPYC), 24 GiB, Linux, no GPU used; tensorflow ..."`."""
    cpu = cpu_flags()
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for package in packages:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    # TensorFlow's oneDNN kernels pick their code by the CPU's instruction
    # set (README, "Figures on your machine"): say which were in use.
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip()
    kernels = "oneDNN off" if onednn == "0" else "oneDNN on"
    if onednn != "0" and isa:
        kernels += f" (ISA capped at {isa})"
    return (
        f"{os.cpu_count()} CPU cores ({cpu}){memory}, {platform.system()}, "
        f"no GPU used, TensorFlow {kernels}; {', '.join(versions)}"
    )


def load_average():
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def load_note(load_before, wall_seconds):
    """The note line on the load average (before the run and now) and the
    total wall time of a benchmark run."""
    return (
        f"- Load average (1/5/15 min) before and after: {load_before} and "
        f"{load_average()}; total wall time {wall_seconds / 60:.1f} min."
    )


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def write_section(path, section, text):
    """Writes `text` as the section headed `section` of the markdown file at
    `path`: in place of an older one (where it stood) or at the end, keeping
    the others (atomically)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = old.split("\n")
    if section in lines:  # the heading as a whole line, not a prefix of one
        start = lines.index(section)
        following = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
            len(lines),
        )
        lines[start:following] = text.rstrip("\n").split("\n") + [""]
        new = "\n".join(lines)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def publish(text, path, section, write=True):
    """Prints the section `text` and, if `write`, writes it into `path`."""
    print()
    print(text)
    if write:
        write_section(pathlib.Path(path), section, text)
        print(f"wrote {path}")


def interleaved_ms(files, runs, rounds, warmup=20):
    """`{label: ms}`: each LiteRT model of `files` (`{label: tflite
    bytes}`) timed `rounds` times, the models in turn (one thread, `runs`
    invokes each time), the median of its medians."""
    from keras_vib import export

    times = {label: [] for label in files}
    for _ in range(rounds):
        for label, tflite in files.items():
            timing = export.benchmark_tflite(tflite, runs=runs, warmup=warmup)
            times[label].append(timing["median_ms"])
    return {label: statistics.median(t) for label, t in times.items()}


class Worker:
    """A benchmark's worker process on one Keras backend: `script
    --worker *argv`, answering one JSON line per JSON command; its first
    line says `{"ready": backend}`."""

    def __init__(self, name, script, argv):
        import subprocess
        import sys

        env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="3")
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--worker", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self.read()
        if ready.get("ready") != name:
            raise RuntimeError(f"the {name} worker did not start: {ready}")

    def read(self):
        import json

        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the {self.name} worker died: {self.proc.stderr.read()}"
            )
        return json.loads(line)

    def ask(self, **command):
        import json

        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        import json

        try:
            self.proc.stdin.write(json.dumps({"do": "stop"}) + "\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


def net_parser(doc, nets, default_nets, rounds):
    """The arguments of the benchmarks that train epochs of the zoo's nets
    in one worker process per backend (gate_speed, gate_ablation,
    gate_profile); a script adds its own."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--nets", nargs="+", choices=nets, default=list(default_nets))
    parser.add_argument("--rounds", type=positive_int, default=rounds)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="a share of each net's epoch (smoke runs)")  # fmt: skip
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    return parser


def net_rounds(args, script, variants, more=()):
    """`epoch_rounds` over one worker per backend of `args.backends`, each
    started as `script --worker --nets ... --scale ... *more`."""
    argv = ["--nets", *args.nets, "--scale", str(args.scale), *more]
    workers = [Worker(name, script, argv) for name in args.backends]
    return epoch_rounds(workers, args.rounds, args.nets, variants)


def paired_ratio(times, base):
    """The median over the rounds of `times[r] / base[r]` (two lists of
    epoch times in round order): paired, so that a round the machine's
    other work slowed down slows both."""
    return statistics.median(t / b for t, b in zip(times, base))


def epoch_rounds(workers, rounds, nets, variants):
    """`{(backend, net, variant): [answers]}`, one answer per round in
    round order: each round, every worker in turn answers `{"do": "epoch",
    "net": net, "variant": variant}` for every net and variant, the order
    of the workers and of the variants rotating each round (no variant
    always runs first after another net's epochs); the workers are closed
    at the end, whatever happens."""
    answers = {}
    try:
        for r in range(rounds):
            shift = r % len(workers)
            turn = r % len(variants)
            for worker in workers[shift:] + workers[:shift]:
                for net in nets:
                    for variant in variants[turn:] + variants[:turn]:
                        answer = worker.ask(do="epoch", net=net, variant=variant)
                        key = (worker.name, net, variant)
                        answers.setdefault(key, []).append(answer)
            print(f"round {r + 1}/{rounds} done", flush=True)
    finally:
        for worker in workers:
            worker.close()
    return answers
