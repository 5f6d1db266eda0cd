#!/usr/bin/env python3
"""End-to-end throughput and peak memory on each clip: anond, deface 1.5.0, plain transcode.

For every clip in ../shared/data/video, the same script runs:
- transcode: `bench/_transcode.py` (decode + re-encode with anond's encoder settings; the floor);
- deface:    `deface CLIP -o OUT` from its own venv (.bench/deface-venv), default settings
             (CenterFace threshold 0.2, blur, ellipse, mask scale 1.3, no audio); for clips
             with audio, also `--keep-audio` (anond keeps audio);
- anond:     `anond process CLIP OUT --report R.json` with the default profile (faces and
             plates, tracking, verification; in the rounds with deface), and again with faces only
             (ANOND_PROFILE__TARGETS='["face"]'), the job deface does, and faces only with
             each --strides detect_stride (the speed knob; default every frame).
- check:     both face models anond ships (CenterFace, RetinaFace; 0.5, whole frame) count
             the faces left in each output against those in the input: a recall proxy on
             clips without labels, read in the column of the family that did not mask.
Each is a separate process, timed from start to exit (start-up and model loading included),
best of --repeat runs. deface and anond faces only (with the stride variants) run in rounds,
one run of each per round, and the ratio to deface is also given per round (median and range):
on a shared machine the speed drifts over minutes, and runs made next to each other see the
same machine. Peak RSS: the whole process tree (deface's ffmpeg writer included),
sampled every 0.1 s from /proc; "max RSS" is the kernel's figure for the largest single process.
fps = decoded frames of the clip / wall seconds. Ratios: anond fps / deface fps (default
profile, and faces only) and anond fps / transcode fps (1.0: anonymizing costs nothing over
re-encoding).

    python bench/throughput.py [--repeat 1] [--clips hamilton,...] [--no-deface] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

import _common as c  # noqa: E402  (sets sys.path for anond)

DEFACE_VENV = c.WORK / "deface-venv"


def clips() -> dict:
    root = c.DATA / "video"
    found = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        media = [p for p in d.iterdir() if p.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv")]
        if media:
            found[d.name] = media[0]
    return found


CHECKERS = ("centerface", "retinaface-mnet025")  # independent face detectors, two families
CHECK_THRESHOLD = 0.5


class Checker:
    """Faces an independent detector finds in every frame of a clip (whole frame, 0.5)."""

    def __init__(self, settings) -> None:
        from anond.detect.engine import Engine

        self.engines = {}
        for name in CHECKERS:
            s = settings.model_copy(update={"models": settings.models.model_copy(
                update={"face": name, "video_face": ""})})
            self.engines[name] = Engine.load(s, ["face"])
        self.detect = settings.profile.detect.model_copy(
            update={"face_threshold": CHECK_THRESHOLD, "tiling": False})

    def count(self, path) -> dict[str, int]:
        import av

        counts = dict.fromkeys(self.engines, 0)
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                bgr = frame.to_ndarray(format="bgr24")
                for name, engine in self.engines.items():
                    counts[name] += len(engine.detect([bgr], self.detect, ["face"])[0])
        return counts


def best(runs: list) -> c.Run:
    ok = [r for r in runs if r.rc == 0]
    return min(ok, key=lambda r: r.seconds) if ok else runs[-1]


def measure(cmd: list[str], repeat: int, out_path, env=None) -> tuple[c.Run, list[float]]:
    return summary([_run_once(cmd, out_path, env) for _ in range(repeat)])


def summary(runs: list[c.Run]) -> tuple[c.Run, list[float]]:
    """The best run and every run's seconds (the table's `wall s` column)."""
    return best(runs), [round(r.seconds, 1) for r in runs]


def measure_rounds(jobs: dict, repeat: int) -> dict[str, list[c.Run]]:
    """Runs of every job {tool: (cmd, out_path, env)}, one of each per round, `repeat` rounds."""
    runs: dict[str, list[c.Run]] = {tool: [] for tool in jobs}
    for _ in range(repeat):
        for tool, (cmd, out_path, env) in jobs.items():
            runs[tool].append(_run_once(cmd, out_path, env))
    return runs


def _run_once(cmd: list[str], out_path, env) -> c.Run:
    if out_path is not None and os.path.exists(out_path):
        os.unlink(out_path)
    return c.run_measured(cmd, env=env)


def round_ratios(base: list[c.Run], other: list[c.Run]) -> str:
    """Per-round speed ratios other/base (base seconds / other seconds): 'median (min-max)'."""
    ratios = sorted(b.seconds / o.seconds for b, o in zip(base, other) if b.rc == 0 and o.rc == 0)
    if not ratios:
        return "n/a"
    median = statistics.median(ratios)
    return f"{median:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else f"{median:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool and clip; best is kept")
    parser.add_argument("--clips", help="comma-separated clip folder names (default: all)")
    parser.add_argument("--no-deface", action="store_true")
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument("--strides", type=lambda v: [int(x) for x in v.split(",") if x],
                        default=[2, 3], help="extra faces-only anond runs with these detect_stride")
    parser.add_argument("--no-default", dest="default", action="store_false",
                        help="skip anond's default profile (faces and plates: the slow run)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the independent-detector residual table")
    args = parser.parse_args()

    settings = c.settings()
    load_before = c.load()
    out_dir = c.WORK / "throughput"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    anond_bin = [sys.executable, "-m", "anond.cli"]
    deface_bin = DEFACE_VENV / "bin" / "deface"
    have_deface = deface_bin.is_file() and not args.no_deface
    env = dict(os.environ, ANOND_LOG_JSON="1")
    wanted = args.clips.split(",") if args.clips else None
    rows, stage_rows, check_rows, notes = [], [], [], []
    checker = Checker(settings) if args.check else None
    if not have_deface:
        notes.append("deface not measured (.bench/deface-venv missing or --no-deface)")
    for name, clip in clips().items():
        if wanted and name not in wanted:
            continue
        facts = c.video_facts(clip)
        frames = facts["frames"]
        print(f"{name}: {facts['width']}x{facts['height']}, {frames} frames, "
              f"{facts['fps']:.2f} fps, audio {facts['audio']}", flush=True)
        ext = clip.suffix.lower()
        results = {}
        out = out_dir / f"transcode{ext}"
        results["transcode (PyAV, floor)"] = measure(
            [sys.executable, str(c.ROOT / "bench" / "_transcode.py"), str(clip), str(out)],
            args.repeat, out)
        # deface masks faces only: the same job for anond, for a like-for-like ratio; these
        # run in rounds (module docstring), each tool writing its own output for the checker.
        faces_env = dict(env, ANOND_PROFILE__TARGETS='["face"]')
        paired = {}
        if have_deface:
            paired["deface 1.5.0"] = ([str(deface_bin), str(clip), "-o", str(out_dir / "deface.mp4")],
                                      out_dir / "deface.mp4", None)
        faces = {"anond, faces only (as deface)": faces_env}
        for stride in args.strides:  # the speed knob: detect every Nth frame, tracker fills in
            faces[f"anond, faces only, detect_stride {stride}"] = dict(
                faces_env, ANOND_VIDEO__DETECT_STRIDE=str(stride))
        for k, (tool, tool_env) in enumerate(faces.items()):
            out = out_dir / f"anond-faces-{k}{ext}"
            paired[tool] = ([*anond_bin, "process", str(clip), str(out), "--on-exists", "replace"],
                            out, tool_env)
        out = out_dir / f"anond{ext}"
        report_path = out_dir / "anond-report.json"
        if args.default:  # the product as shipped, in the same rounds as deface
            paired["anond"] = ([*anond_bin, "process", str(clip), str(out), "--on-exists", "replace",
                                "--report", str(report_path)], out, env)
        rounds = measure_rounds(paired, args.repeat)
        if "deface 1.5.0" in rounds:
            results["deface 1.5.0"] = summary(rounds["deface 1.5.0"])
            if facts["audio"]:
                out = out_dir / "deface-audio.mp4"
                results["deface 1.5.0 --keep-audio"] = measure(
                    [str(deface_bin), str(clip), "-o", str(out), "--keep-audio"], args.repeat, out)
        if args.default:
            results["anond"] = summary(rounds["anond"])
        for tool in faces:
            results[tool] = summary(rounds[tool])
        outputs = {}
        if checker:
            for tool in faces:
                outputs[tool] = checker.count(paired[tool][1])
            outputs["input"] = checker.count(clip)
            if have_deface and (out_dir / "deface.mp4").is_file():  # its last run's output
                outputs["deface 1.5.0"] = checker.count(out_dir / "deface.mp4")
            for tool, counts in outputs.items():
                if tool == "input":
                    continue
                check_rows.append([name, tool] + [
                    f"{counts[n]} / {outputs['input'][n]} = {counts[n] / max(1, outputs['input'][n]):.1%}"
                    for n in CHECKERS])
        fps = {k: (frames / r.seconds if r.rc == 0 else None) for k, (r, _) in results.items()}
        for tool, (r, all_s) in results.items():
            if r.rc != 0:
                notes.append(f"{name}: {tool} failed (exit {r.rc}): "
                             f"{r.stderr_tail.strip().splitlines()[-1:] if r.stderr_tail else ''}")
            rows.append([name, f"{facts['width']}x{facts['height']}", frames, tool,
                         f"{r.seconds:.1f}" + (f" ({', '.join(map(str, all_s))})" if len(all_s) > 1 else ""),
                         f"{fps[tool]:.2f}" if fps[tool] else "failed", f"{r.cpu_s:.1f}",
                         f"{r.peak_rss_mib:.0f}", f"{r.max_rss_mib:.0f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
        a = fps.get("anond")
        d = fps.get("deface 1.5.0")
        t = fps.get("transcode (PyAV, floor)")
        if args.default:
            rows.append([name, "", "", "**ratio anond (default: faces + plates) / deface** (best runs)", "",
                         f"{a / d:.2f}" if a and d else "n/a", "", "", ""])
            if "deface 1.5.0" in rounds and args.repeat > 1:
                rows.append([name, "", "", "**... the same, per round: median (range)**", "",
                             round_ratios(rounds["deface 1.5.0"], rounds["anond"]), "", "", ""])
            rows.append([name, "", "", "**ratio anond/transcode**", "",
                         f"{a / t:.2f}" if a and t else "n/a", "", "", ""])
        for tool in faces:
            af = fps[tool]
            rows.append([name, "", "", f"**ratio {tool[len('anond, '):]} / deface** (best runs)", "",
                         f"{af / d:.2f}" if af and d else "n/a", "", "", ""])
            if "deface 1.5.0" in rounds and args.repeat > 1:
                rows.append([name, "", "", "**... the same, per round: median (range)**", "",
                             round_ratios(rounds["deface 1.5.0"], rounds[tool]), "", "", ""])
        if "anond" in results and results["anond"][0].rc == 0 and report_path.is_file():
            rep = json.loads(report_path.read_text())
            job = rep["jobs"][0] if isinstance(rep, dict) and "jobs" in rep else rep
            d_ = job.get("durations", {})
            total = d_.get("total")
            stage_rows.append([name] + [f"{d_.get(k, 0):.1f}" for k in
                                        ("decode", "detect", "track", "mask", "verify", "encode")]
                              + [f"{total:.1f}" if total else "?",
                                 f"{frames / total:.2f}" if total else "?",
                                 json.dumps(job.get("masked", {})), json.dumps(job.get("tracks", {}))])
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
    headers = ["clip", "size", "frames", "tool", "wall s", "fps", "CPU s", "peak RSS MiB (tree)",
               "max RSS MiB (1 proc)"]
    main_table = c.table(headers, rows)
    stage_table = c.table(["clip", "decode", "detect", "track", "mask", "verify", "encode",
                           "job total s", "fps in-job", "masked (boxes)", "tracks"], stage_rows)
    check_table = c.table(["clip", "output of"] + [f"faces {n} finds (output / input)" for n in CHECKERS],
                          check_rows)
    print("\n" + main_table + "\n\nanond's own report (seconds per stage, without start-up):\n" + stage_table)
    print("\nIndependent detectors on input and output (threshold 0.5, whole frame; the column "
          "of the family that did not mask is the honest one):\n" + check_table)
    for n in notes:
        print("note:", n)
    if not args.no_append:
        p = settings.profiles["default"]
        extra = {
            "anond profile": f"default: targets {p.targets}, tiling {p.detect.tiling}, verify {p.verify}, "
                             f"video crf {settings.video.crf} preset {settings.video.preset}, "
                             f"batch {settings.video.batch_size}, detect_stride {settings.video.detect_stride}",
            "timing": f"wall clock per process, start-up and model loading included; best of {args.repeat}; "
                      f"deface, anond (faces + plates) and anond faces only in {args.repeat} rounds, one run of each per round; "
                      "CPU s: user + system of the best run",
            "deface": "1.5.0 in .bench/deface-venv (onnxruntime CPU), default settings",
        }
        c.append(c.header("End-to-end throughput on the clips", c.command_line(), settings, extra,
                          load_before=load_before)
                 + "\n" + main_table
                 + "\n\nanond's own job report for the same run (stage seconds, no start-up):\n\n"
                 + stage_table
                 + "\n\nFaces an independent detector still finds in each output (threshold 0.5, "
                   "whole frame; deface masks with CenterFace, anond's videos with RetinaFace: the "
                   "other family's column is the independent one; lower is better):\n\n"
                 + check_table + "\n" + "".join(f"\n- note: {n}" for n in notes) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
