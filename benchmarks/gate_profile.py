"""Where a gated training step's time goes, from the backends' own
profilers: the operators of the plain and the gated step, per net and
backend, summed by what they do.

    python benchmarks/gate_profile.py [--backends tensorflow jax]
        [--nets lenet300 lenet5 mobilenetv2 vit] [--rounds 2] [--write]

The nets, data and compile of `benchmarks/gate_speed.py`. Each round,
every backend's worker trains one epoch of each net's plain and gated
model under its profiler (`tf.profiler.experimental.Profile` on TensorFlow,
`jax.profiler.trace` on JAX; both write an XSpace protobuf, read here with
the protobuf classes TensorFlow ships). An operator is a TensorFlow kernel
(`StatefulPartitionedCall/<scope>:<type>`, its time including the
ParallelFor work it hands out) or an XLA CPU thunk (its HLO instruction;
the scope from the instruction's `op_name` metadata in the HLO module the
trace carries). Its scope sorts it: under a gate layer (the scope of
`keras_vib.gates.gates(model)`'s layers) its random draws (the scope of
`keras.random.normal`: TensorFlow's `stateless_random_normal`, JAX's
`_normal`) or the rest of the gate's work; a backward operator (TensorFlow's
`gradient_tape/`, JAX's `transpose(...)`) or a forward one; the optimizer
(`adam/`); the loss and metrics; what carries no scope (the copies XLA
inserts: of the state between steps, of layouts; a copy inside a loop's
body, such as JAX's threefry loop on CPU, takes the loop's scope).
"runtime" is the time of the executor's own events (TensorFlow's
`ExecutorState::Process`, XLA's thunk executor), waits left out. The
times are microseconds per step summed over the threads (two threads can
each run an operator at once), the median over the rounds. Profiling
slows the step (XLA's many small thunks most): each round also times the
same epoch untraced just before, and `gate_speed.py` times whole epochs.
"""

import collections
import glob
import json
import re
import statistics
import sys
import tempfile
import time

from _common import (
    cpu_flags,
    load_average,
    load_note,
    machine,
    net_parser,
    net_rounds,
    publish,
)
from gate_speed import NAMES, NETS, _EpochTimer, prepare

SECTION = (
    "## Where a gated step's time goes, by operator (`benchmarks/gate_profile.py`)"
)
VARIANTS = ("plain", "gated")
# Steps profiled per epoch, and the batch size (gate_speed.py's).
STEPS = {
    "lenet300": (100, 100),
    "lenet5": (30, 100),
    "mobilenetv2": (10, 32),
    "vit": (30, 100),
}
CATEGORIES = (
    "layers, forward",
    "layers, backward",
    "gates' draws",
    "gates, forward",
    "gates, backward",
    "optimizer",
    "loss and metrics",
    "other operators",
    "copies (no scope)",
    "runtime",
)
WALLS = ("wall, untraced", "wall, traced")  # µs per step, not summed
_DRAW = re.compile(r"random|normal|uniform|seed", re.IGNORECASE)
_WRAPPED = re.compile(r"^(?:jvp|transpose|vmap|remat|checkpoint)\((.*)\)$")


# -- reading a trace ----------------------------------------------------------


def _xspace(directory):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    return space


def _hlo_scopes(space):
    """`{(program id, instruction): op_name}` over the train steps' HLO
    modules (a worker's trace may carry several nets' modules)."""
    from tensorflow.compiler.xla.service import hlo_pb2

    scopes = {}
    for plane in space.planes:
        if plane.name != "/host:metadata":
            continue
        stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
        for event in plane.event_metadata.values():
            stats = {stat_names[s.metadata_id]: s for s in event.stats}
            if "Hlo Proto" not in stats or "program_id" not in stats:
                continue
            hlo = hlo_pb2.HloProto()
            hlo.ParseFromString(stats["Hlo Proto"].bytes_value)
            if "train_step" not in hlo.hlo_module.name:
                continue
            program = (
                stats["program_id"].int64_value or stats["program_id"].uint64_value
            )
            # An instruction without a scope (a copy XLA inserted) inside a
            # called computation (a while loop's body) takes its caller's.
            caller = {}
            for computation in hlo.hlo_module.computations:
                for instruction in computation.instructions:
                    for called in instruction.called_computation_ids:
                        caller[called] = instruction.metadata.op_name
            for computation in hlo.hlo_module.computations:
                for instruction in computation.instructions:
                    key = (program, instruction.name)
                    scope = instruction.metadata.op_name
                    scopes[key] = scope or caller.get(computation.id, "")
    return scopes


def _line_times(line, key, is_op):
    """`{event key: ps}` over one thread: an operator's event includes what
    runs inside it (ParallelFor work, a while loop's body) but for the
    operators nested in it; any other event keeps only its own time."""
    events = sorted(
        ((e.offset_ps, e.duration_ps, key(e)) for e in line.events),
        key=lambda e: (e[0], -e[1]),
    )
    times, stack = collections.Counter(), []  # stack: (end, owner, is_op)
    for start, duration, name in events:
        while stack and stack[-1][0] <= start:
            stack.pop()
        op = is_op(name)
        inside_op = any(s[2] for s in stack)
        if op or not inside_op:
            if stack:  # the parent loses the time
                times[stack[-1][1]] -= min(duration, stack[-1][0] - start)
            times[name] += duration
            stack.append((start + duration, name, op))
        else:  # belongs to the innermost operator around it
            owner = next(s[1] for s in stack[::-1] if s[2])
            stack.append((start + duration, owner, True))
    return times


def _components(scope, backend):
    """A scope's layer names, unwrapped (`jvp(fc1)` -> `fc1`), TensorFlow's
    `_1` suffixes dropped."""
    out = []
    for part in scope.split("/"):
        while (m := _WRAPPED.match(part)) is not None:
            part = m.group(1)
        if backend == "tensorflow":
            part = re.sub(r"_\d+$", "", part)
        out.append(part)
    return out


def _inside(parts, path):
    n = len(path)
    return any(parts[i : i + n] == path for i in range(len(parts) - n + 1))


def categorize(space, backend, gate_paths, optimizer):
    """`{category: ps}` of one trace."""
    hlo = _hlo_scopes(space) if backend == "jax" else {}
    prefix = "StatefulPartitionedCall/"
    if backend == "tensorflow":
        is_op = lambda n: n.startswith(prefix) and ":" in n  # noqa: E731
    else:
        is_op = hlo.__contains__
    paths = [_components(p, backend) for p in gate_paths]
    out = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        program_stat = next(
            (k for k, v in plane.stat_metadata.items() if v.name == "program_id"), None
        )

        def key(event, names=names, program_stat=program_stat):
            name = names[event.metadata_id]
            for stat in event.stats:  # an XLA thunk: its program's instruction
                if stat.metadata_id == program_stat:
                    return (stat.int64_value or stat.uint64_value, name)
            return name

        worker = "tf_Compute" if backend == "tensorflow" else "tf_XLA"
        for line in plane.lines:
            if not line.name.startswith(worker):
                continue
            for name, ps in _line_times(line, key, is_op).items():
                if not is_op(name):
                    if "wait" not in str(name).lower():
                        out["runtime"] += ps
                    continue
                if backend == "tensorflow":
                    scope = name[len(prefix) :].rsplit(":", 1)[0]
                    backward = scope.startswith("gradient_tape/")
                else:
                    scope = hlo[name]
                    backward = "transpose(" in scope
                out[_category(scope, backend, backward, paths, optimizer)] += ps
    return out


def _category(scope, backend, backward, paths, optimizer):
    if not scope:
        return "copies (no scope)"
    parts = _components(scope, backend)
    if parts and parts[0] in ("gradient_tape", "jit(train_step)"):
        parts = parts[1:]
    if parts and parts[0] == _components(optimizer, backend)[0]:
        return "optimizer"
    if parts and parts[0].startswith(("compile_loss", "compile_metrics")):
        return "loss and metrics"
    if any(_inside(parts, p) for p in paths):
        if any(_DRAW.search(p) for p in parts):
            return "gates' draws"
        return "gates, backward" if backward else "gates, forward"
    if len(parts) > 1:
        return "layers, backward" if backward else "layers, forward"
    return "other operators"


# -- the worker (one process per backend) -------------------------------------


def worker(nets, scale):
    import keras
    import numpy as np

    import keras_vib as kv

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    models, data, gates = {}, {}, {}
    for net in nets:
        steps, batch = STEPS[net]
        steps = max(1, int(steps * scale))
        pair, data[net] = prepare(net, steps * batch, batch, rng)
        for vib, model in pair.items():
            models[net, vib] = model
        # A gate's scope without the model's own name (JAX's scopes start
        # at the layer the model calls).
        gates[net] = [
            g.path.split("/", 1)[1] if g.path.startswith(models[net, True].name + "/")
            else g.path
            for _, g in kv.gates.gates(models[net, True])
        ]  # fmt: skip
    print(json.dumps({"ready": backend}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] != "epoch":
            break
        net, vib = command["net"], command["variant"] == "gated"
        model = models[net, vib]
        x, y, batch = data[net]
        timer = _EpochTimer()  # the same epoch untraced, first
        model.fit(x, y, batch_size=batch, verbose=0, callbacks=[timer])
        untraced = timer.seconds
        with tempfile.TemporaryDirectory() as directory:
            if backend == "tensorflow":
                import tensorflow as tf

                trace = tf.profiler.experimental.Profile(directory)
            else:
                import jax

                trace = jax.profiler.trace(directory)
            with trace:
                model.fit(x, y, batch_size=batch, verbose=0, callbacks=[timer])
            seconds = timer.seconds
            times = categorize(
                _xspace(directory), backend, gates[net] if vib else [],
                model.optimizer.name,
            )  # fmt: skip
        steps = len(x) // batch
        per_step = {k: v / 1e6 / steps for k, v in times.items()}  # µs
        per_step["wall, untraced"] = untraced * 1e6 / steps
        per_step["wall, traced"] = seconds * 1e6 / steps
        print(json.dumps({"us": per_step}), flush=True)


# -- the main process ---------------------------------------------------------


def table(median, args, wall, load_before):
    cpu = cpu_flags()
    lines = [
        SECTION,
        "",
        "`python benchmarks/gate_profile.py --backends "
        f"{' '.join(args.backends)} --nets {' '.join(args.nets)} "
        f"--rounds {args.rounds}`",
        "",
        f"- Machine: {machine(('tensorflow', 'keras', 'jax'))}.",
        load_note(load_before, wall),
        "- Microseconds of operator time per training step, summed over the "
        "threads, median over the rounds (one profiled epoch per round of "
        + ", ".join(
            f"{STEPS[n][0]} steps of {STEPS[n][1]} ({NAMES[n]})" for n in args.nets
        )
        + '); "extra" is gated minus plain, and its share of the gated '
        "step's whole extra operator time. Categories: the module's docstring.",
        "",
    ]
    for net in args.nets:
        backends = [b for b in args.backends if (b, net, "plain") in median]
        if not backends:
            continue
        lines += [
            f"**{NAMES[net]}** ({cpu}):",
            "",
            "| operators | "
            + " | ".join(f"{b} plain | {b} gated | {b} extra" for b in backends)
            + " |",
            "|---|" + "---|---|---|" * len(backends),
        ]
        totals = {}
        for b in backends:
            plain, gated = (
                sum(median[b, net, v].get(c, 0.0) for c in CATEGORIES) for v in VARIANTS
            )
            totals[b] = (plain, gated, gated - plain)
        for category in (*CATEGORIES, "all", *WALLS):
            cells = []
            for b in backends:
                if category == "all":
                    p, g, extra = totals[b]
                    cells.append(f"{p:,.0f} | {g:,.0f} | {extra:+,.0f}")
                    continue
                if category in WALLS:
                    p = median[b, net, "plain"][category]
                    g = median[b, net, "gated"][category]
                    cells.append(f"{p:,.0f} | {g:,.0f} | {g / p:.2f}x")
                    continue
                p = median[b, net, "plain"].get(category, 0.0)
                g = median[b, net, "gated"].get(category, 0.0)
                whole = totals[b][2]
                share = f" ({(g - p) / whole:.0%})" if whole > 0 else ""
                cells.append(f"{p:,.0f} | {g:,.0f} | {g - p:+,.0f}{share}")
            lines.append(f"| {category} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = net_parser(__doc__, NETS, NETS, rounds=2).parse_args(argv)
    if args.worker:
        return worker(args.nets, args.scale)
    load_before, start = load_average(), time.perf_counter()
    answers = net_rounds(args, __file__, VARIANTS)
    median = {}
    for key, runs in answers.items():
        categories = {c for run in runs for c in run["us"]}
        median[key] = {
            c: statistics.median(run["us"].get(c, 0.0) for run in runs)
            for c in categories
        }
    text = table(median, args, time.perf_counter() - start, load_before)
    publish(text, args.benchmarks_md, SECTION, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
