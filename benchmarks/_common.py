"""What the benchmark scripts share: the machine line, argument types, and
writing one section of BENCHMARKS.md."""

import argparse
import importlib.metadata
import os
import platform

PACKAGES = ("tensorflow", "keras", "ai-edge-litert")


def machine(packages=PACKAGES):
    """`"2 CPU cores (AMD EPYC), 24 GiB, Linux, no GPU used; tensorflow ..."`."""
    cpu = platform.processor() or platform.machine()
    memory = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
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
    return (
        f"{os.cpu_count()} CPU cores ({cpu}){memory}, {platform.system()}, "
        f"no GPU used; {', '.join(versions)}"
    )


def load_average():
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def write_section(path, section, text):
    """Writes `text` as the section headed `section` of the markdown file at
    `path`, replacing an older one and keeping the others (atomically)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if section in old:
        start = old.index(section)
        following = old.find("\n## ", start + len(section))
        old = old[:start] + (old[following + 1 :] if following >= 0 else "")
    new = old.rstrip("\n") + "\n\n" + text
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
