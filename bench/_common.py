"""Shared helpers of the bench scripts: machine facts, versions, tables, measured runs.

Every bench script prints its tables and appends them to docs/BENCHMARKS.md with the date,
the machine (cores, CPU model, RAM, load), the command, model names + sha256 and versions.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANOND_BENCH_DATA", ROOT.parent / "shared" / "data"))
BENCHMARKS_MD = ROOT / "docs" / "BENCHMARKS.md"
WORK = ROOT / ".bench"  # gitignored: venvs, outputs
sys.path.insert(0, str(ROOT))


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def gpu() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().replace("\n", "; ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "none"


def machine() -> dict:
    return {"cores (nproc)": os.cpu_count(), "cpu": cpu_model(), "ram": f"{ram_gib():.1f} GiB",
            "gpu": gpu(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for dist in ("anond", "onnxruntime-gpu", "onnxruntime", "av", "numpy", "opencv-python-headless",
                 "faster-coco-eval"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    try:
        import av

        out["libavcodec"] = ".".join(map(str, av.library_versions["libavcodec"]))
    except Exception:  # noqa: BLE001 - informational only
        pass
    return out


def models(settings) -> list[dict]:
    """Name, sha256 and task of the models the settings select (from installed.json), with each
    one's check model (and its threshold), second look and track look."""
    from anond.models import load_manifest, read_installed

    installed = read_installed(Path(settings.models.dir))
    manifest = load_manifest(settings.models.manifest)
    rows = []
    for task, key in (("face", "face"), ("face (videos)", "video_face"), ("plate", "plate"),
                      ("plate (videos)", "video_plate")):
        name = getattr(settings.models, key) or getattr(settings.models, key.removeprefix("video_"))
        rows.append({"task": task, "name": name, "sha256": installed.get(name, {}).get("sha256", "?")})
        spec = manifest.get(name)
        if spec is None:
            continue
        for label, helper in ((f"check (>= {spec.check_threshold})", spec.check),
                              ("second look", spec.second_look),
                              (f"track look (>= {spec.track_look_threshold})", spec.track_look)):
            if helper:
                rows.append({"task": f"{task} {label}", "name": helper,
                             "sha256": installed.get(helper, {}).get("sha256", "?")})
    return rows


def plate_threshold(settings_obj, name: str) -> float:
    """The threshold plate model `name` was calibrated for (manifest `threshold`), else the
    profile's: what anond itself uses when that model is configured (config.Settings)."""
    from anond.models import load_manifest

    spec = load_manifest(settings_obj.models.manifest).get(name)
    return spec.threshold if spec is not None and spec.threshold is not None \
        else settings_obj.profile.detect.plate_threshold


def with_plate_model(settings_obj, name: str):
    """`settings_obj` with `name` as the plate model, at that model's calibrated threshold."""
    s = settings_obj.model_copy(update={"models": settings_obj.models.model_copy(update={"plate": name})})
    t = plate_threshold(settings_obj, name)
    profiles = {k: p.model_copy(update={"detect": p.detect.model_copy(update={"plate_threshold": t})})
                for k, p in s.profiles.items()}
    return s.model_copy(update={"profiles": profiles, "profile": profiles["default"]})


def with_overrides(settings_obj, spec: str):
    """`settings_obj` with `spec` applied to every profile and the models: comma-separated
    KEY=VALUE, KEY `detect.X`, `mask.X`, `verify` or `models.X` (values as TOML scalars:
    0.1, true, "name" or name)."""
    import tomllib

    models, sections, top = {}, {"detect": {}, "mask": {}}, {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, _, raw = item.partition("=")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a model name
        head, _, rest = key.partition(".")
        if head == "models":
            models[rest] = value
        elif head in sections and rest:
            sections[head][rest] = value
        elif head == "verify" and not rest:
            top[head] = value
        else:
            raise SystemExit(f"unknown setting {key!r} (detect.X, mask.X, verify, models.X)")
    # Validated as the product validates them (a typo or a wrong type fails here, not later).
    profiles = {k: type(p).model_validate(p.model_copy(update={
        **top, **{name: getattr(p, name).model_copy(update=upd) for name, upd in sections.items() if upd}
    }).model_dump()) for k, p in settings_obj.profiles.items()}
    chosen = type(settings_obj.models).model_validate({**settings_obj.models.model_dump(), **models})
    return settings_obj.model_copy(update={"models": chosen, "profiles": profiles,
                                           "profile": profiles["default"]})


def settings():
    """The settings the product would use here ($ANOND_CONFIG or the defaults), from ROOT."""
    from anond import log
    from anond.config import load_settings

    log.configure(os.environ.get("ANOND_BENCH_LOG_LEVEL", "warning"))
    os.chdir(ROOT)  # relative paths (var/inbox, ...) mean what they mean for `make run`
    return load_settings(os.environ.get("ANOND_CONFIG"))


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table (also readable as plain text)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    lines = [fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


STARTED = now()  # when the script started: the date of its section


def header(title: str, command: str, settings_obj=None, extra: dict | None = None,
           load_before: str | None = None) -> str:
    """The facts every appended section starts with."""
    m = machine()
    lines = [f"## {title} — {STARTED} (finished {now()[11:]})", "",
             f"- command: `{command}`",
             "- machine: " + ", ".join(f"{k} {v}" for k, v in m.items()),
             f"- load average (1/5/15 min) at start: {load_before or load()}, at end: {load()} "
             "(the machine is shared; other work may have been running)",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items())]
    if settings_obj is not None:
        lines.append("- models: " + ", ".join(f"{r['task']} `{r['name']}` sha256 `{r['sha256'][:16]}…`"
                                              for r in models(settings_obj)))
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


def append(section: str) -> None:
    """Append a section to docs/BENCHMARKS.md (created with its preamble if missing)."""
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    with BENCHMARKS_MD.open("a") as f:
        f.write("\n" + section.rstrip() + "\n")


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return " ".join(shlex.quote(a) for a in ["python", str(shown), *sys.argv[1:]])


# --- measured subprocess runs ------------------------------------------------------------

@dataclass
class Run:
    rc: int
    seconds: float
    peak_rss_mib: float  # whole process tree, sampled
    max_rss_mib: float  # largest single process (kernel's ru_maxrss via wait4)
    stderr_tail: str = ""
    cpu_s: float = 0.0  # user + system CPU seconds of the process and the children it waited for


def _tree_rss_kib(root_pid: int) -> int:
    """Sum of VmRSS over `root_pid` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None,
                 sample_s: float = 0.1, timeout: float | None = None) -> Run:
    """Run `cmd`; wall time, peak RSS of its process tree (sampled) and the kernel's max RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))
            done.wait(sample_s)

    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    deadline = None if timeout is None else started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    reader.join(timeout=5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = b"".join(err_chunks).decode(errors="replace")[-2000:]
    return Run(proc.returncode, seconds, peak[0] / 1024, usage.ru_maxrss / 1024, tail,
               usage.ru_utime + usage.ru_stime)


def video_facts(path: Path) -> dict:
    """Frames (decoded), size, fps, codec of the first video stream."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        fps = float(s.average_rate) if s.average_rate else float("nan")
        return {"frames": frames, "width": s.codec_context.width, "height": s.codec_context.height,
                "fps": fps, "codec": s.codec_context.name,
                "audio": bool(c.streams.audio)}
