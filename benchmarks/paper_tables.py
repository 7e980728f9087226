"""Reproduce the VIBNet paper's MNIST rows and write them into BENCHMARKS.md.

    python benchmarks/paper_tables.py --seeds 0 1 2 --models lenet300 lenet5

Runs `keras-vib train` with its default recipe for each model on MNIST and
each seed, reads every run's `report.json`, and writes the median over seeds
(error of the final model, r_W, r_N, FLOPs, structure, training wall time)
under the paper's rows, with the exact commands and the machine, into the
section "Paper tables (MNIST)" of BENCHMARKS.md (replacing an older one).
Extra arguments after `--` go to every `keras-vib train` (e.g. `-- --epochs 1`
for a smoke run, which then should not be written into BENCHMARKS.md: use
`--benchmarks-md` to write elsewhere). With `--reuse`, a run whose output
directory already holds a report.json with the same settings (the same
recipe, seed and arguments) is read instead of trained again, so the models
can be run one at a time and the table written from all of them.

`--title T` writes a variant of a recipe instead (the arguments after `--`
change it) into a section "Recipe variant (MNIST): T" of its own, so that
what was tried beside the default recipes stays in BENCHMARKS.md with its
command; give it its own `--out`.
"""

import argparse
import json
import pathlib
import shlex
import statistics
import subprocess
import sys
import time

from _common import ROOT, machine, publish  # noqa: E402

import _keras_vib_cli
from keras_vib import cli

SECTION = "## Paper tables (MNIST)"
VARIANT_SECTION = "## Recipe variant (MNIST): {}"

# The VIBNet rows of the paper (../shared/VIBNET.md).
PAPER = {
    "lenet300": {
        "name": "LeNet-300-100",
        "error_pct": 1.6,
        "r_w_pct": 3.59,
        "r_n_pct": 16.98,
        "flops": None,
        "structure": "97-71-33",
    },
    "lenet5": {
        "name": "LeNet-5-Caffe",
        "error_pct": 1.0,
        "r_w_pct": 0.83,
        "r_n_pct": 15.55,
        "flops": 94_000,
        "structure": None,
    },
}
# Targets of our issue: the paper's row, within a training time per seed.
TIME_LIMIT_S = {"lenet300": 10 * 60, "lenet5": 45 * 60}


def reusable(command, out):
    """The report of an earlier run in `out` made with the same settings."""
    path = out / "report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    wanted = cli.run_config(_keras_vib_cli.build_parser().parse_args(command[1:]))
    return report if same_results(report.get("config", {}), wanted) else None


def same_results(saved, wanted):
    """Whether two run configs train the same model: equal but for the
    settings that change only the speed (`cli.SPEED_ONLY`, tested to give the
    same weights)."""

    def strip(config):
        return {k: v for k, v in config.items() if k not in cli.SPEED_ONLY}

    return strip(saved) == strip(wanted)


def run_one(model, seed, out_dir, extra, reuse=False):
    out = out_dir / f"{model}_mnist_seed{seed}"
    command = [
        "keras-vib",
        "train",
        "--model",
        model,
        "--dataset",
        "mnist",
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--verbose",
        "2",
        "--overwrite",  # a run kept is reused below; any other is replaced
        *extra,
    ]
    if reuse and (report := reusable(command, out)) is not None:
        print("reusing", out / "report.json", "of:", shlex.join(command), flush=True)
        return command, report
    argv = [sys.executable, "-m", "_keras_vib_cli", *command[1:]]
    print("$", shlex.join(command), flush=True)
    subprocess.run(argv, check=True)
    return command, json.loads((out / "report.json").read_text())


def tuned(report):
    return report["config"].get("finetune_epochs", 0) > 0


def fmt(value, pattern):
    return "-" if value is None else pattern.format(value)


def table(results, commands, command_line, note=None, title=None):
    recipe = "its default recipe (`keras_vib/recipes.py`, `RECIPES`)"
    if title:
        recipe += " changed by the arguments after `--` in the command"
    lines = [
        VARIANT_SECTION.format(title) if title else SECTION,
        "",
        "Median over seeds of `keras-vib train --model M --dataset mnist` with",
        f"{recipe}; error is that of the final model on the 10,000 test",
        "images: after the last epoch, or after the fine-tuning of the slim",
        "model where the recipe has one (the paper's baselines picked their",
        "best epoch; we do not). Training time counts every epoch (plain",
        "pre-training included), slimming and fine-tuning.",
        "",
        f"Command: `{shlex.join(command_line)}`",
        "",
        f"Machine: {machine()}; written {time.strftime('%Y-%m-%d')}.",
        "",
        "| net | source | error % | r_W % | r_N % | FLOPs | structure | "
        "train time / seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, runs in results.items():
        paper = PAPER[model]
        lines.append(
            f"| {paper['name']} | paper (VIBNet) | {paper['error_pct']} | "
            f"{paper['r_w_pct']} | {paper['r_n_pct']} | "
            f"{fmt(paper['flops'], '{:,}')} | {paper['structure'] or '-'} | - |"
        )
        median = {
            key: statistics.median(r[key] for r in runs)
            for key in ("error_pct", "r_w_pct", "r_n_pct", "flops", "wall_seconds")
        }
        # The structure of the run whose error is the median one.
        middle = sorted(runs, key=lambda r: r["error_pct"])[len(runs) // 2]
        lines.append(
            f"| {paper['name']} | keras_vib, median of {len(runs)} | "
            f"{median['error_pct']:.2f} | {median['r_w_pct']:.2f} | "
            f"{median['r_n_pct']:.2f} | {median['flops']:,.0f} | "
            f"{middle['structure']} | {median['wall_seconds'] / 60:.1f} min |"
        )
    lines += ["", "Every run:", ""]
    lines += [
        "| command | error % | error % before fine-tuning | r_W % | r_N % | FLOPs "
        "| structure | wall s |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for model, runs in results.items():
        for command, r in zip(commands[model], runs):
            lines.append(
                f"| `{shlex.join(command)}` | {r['error_pct']:.2f} | "
                f"{fmt(r['gated_error_pct'] if tuned(r) else None, '{:.2f}')} | "
                f"{r['r_w_pct']:.2f} | {r['r_n_pct']:.2f} | {r['flops']:,} | "
                f"{r['structure']} | {r['wall_seconds']:.0f} |"
            )
    verdicts = []
    for model, runs in results.items():
        paper = PAPER[model]
        median = {
            k: statistics.median(r[k] for r in runs)
            for k in ("error_pct", "r_w_pct", "r_n_pct", "wall_seconds")
        }
        beaten = [
            k for k in ("error_pct", "r_w_pct", "r_n_pct") if median[k] <= paper[k]
        ]
        missed = [k for k in ("error_pct", "r_w_pct", "r_n_pct") if k not in beaten]
        in_time = median["wall_seconds"] <= TIME_LIMIT_S[model]
        verdicts.append(
            f"- {paper['name']}: at or below the paper on "
            f"{', '.join(beaten) or 'no column'}"
            + (f"; above it on {', '.join(missed)}" if missed else "")
            + f"; training {'within' if in_time else 'over'} the "
            f"{TIME_LIMIT_S[model] // 60}-minute target."
        )
    lines += ["", "Against the paper:", "", *verdicts, ""]
    if note:
        lines += [f"Note: {note}", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--models", nargs="+", choices=sorted(PAPER), default=["lenet300", "lenet5"]
    )
    parser.add_argument("--out", default="runs/paper_tables")
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep a run whose report.json in --out has the same settings",
    )
    parser.add_argument(
        "--note", help="a line written under the table (e.g. how the runs were run)"
    )
    parser.add_argument(
        "--title", help="write a recipe variant into a section with this title"
    )
    args, extra = parser.parse_known_args()
    if extra and extra[0] == "--":
        extra = extra[1:]
    out_dir = pathlib.Path(args.out)
    results, commands = {}, {}
    for model in args.models:
        for seed in args.seeds:
            command, report = run_one(model, seed, out_dir, extra, args.reuse)
            results.setdefault(model, []).append(report)
            commands.setdefault(model, []).append(command)
    command_line = ["python", "benchmarks/paper_tables.py", "--seeds"]
    command_line += [str(seed) for seed in args.seeds] + ["--models", *args.models]
    if args.title:
        command_line += ["--out", args.out, "--title", args.title]
    command_line += ["--", *extra] if extra else []
    text = table(results, commands, command_line, args.note, args.title)
    section = VARIANT_SECTION.format(args.title) if args.title else SECTION
    publish(text, args.benchmarks_md, section)


if __name__ == "__main__":
    main()
