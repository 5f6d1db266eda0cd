"""Settings: one TOML file plus ANOND_* environment overrides, validated once at the edge.

Precedence: explicit values > environment (ANOND_SECTION__KEY) > TOML file > embedded defaults.
The rest of the code receives these models (or plain values taken from them), never the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

MaskMode = Literal["blur", "pixelate", "solid"]
MaskShape = Literal["ellipse", "box"]
TargetName = Literal["face", "plate"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuntimeSettings(_Section):
    """ONNX Runtime: which execution providers, in order, and how many threads."""

    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    require_gpu: bool = False  # refuse to start unless CUDA is really active
    intra_op_threads: int = Field(0, ge=0)  # 0 = ONNX Runtime's default (all cores)
    inter_op_threads: int = Field(1, ge=0)
    cuda_device_id: int = Field(0, ge=0)


class ModelSettings(_Section):
    """Which installed models serve each target (names from models/manifest.toml)."""

    dir: Path = Path("var/models")
    manifest: Path | None = None  # default: the manifest shipped with anond
    face: str = "centerface"
    plate: str = "platedet-yolov8s-seg"


class MaskSettings(_Section):
    """How a found object is made unrecognisable."""

    mode: MaskMode = "blur"
    face_shape: MaskShape = "ellipse"
    plate_shape: MaskShape = "box"
    manual_shape: MaskShape = "box"
    # Margin added around each box, as a fraction of its width/height on every side.
    face_margin: float = Field(0.25, ge=0, le=2)
    plate_margin: float = Field(0.15, ge=0, le=2)
    solid_color: tuple[int, int, int] = (0, 0, 0)  # BGR


class DetectSettings(_Section):
    """Detector thresholds and the small-object strategy."""

    face_threshold: float = Field(0.4, gt=0, le=1)
    plate_threshold: float = Field(0.25, gt=0, le=1)
    nms_iou: float = Field(0.4, gt=0, le=1)
    # Tiling: images larger than tile_size on a side are also scanned in overlapping tiles,
    # so faces down to ~10 px and distant plates are found.
    tiling: bool = True
    tile_size: int = Field(640, ge=128)
    tile_overlap: float = Field(0.2, ge=0, lt=0.9)
    max_input_side: int = Field(1920, ge=160)  # full-image pass is scaled down to this
    # Detail pass for small images: enlarged (by at most `upscale`) until the longer side
    # reaches `upscale_to`, then scanned in tiles, so faces of ~8-10 px are still found.
    upscale: float = Field(2.0, ge=1, le=4)
    upscale_to: int = Field(1280, ge=160)


class Profile(_Section):
    """What to mask and how: one per inbox (or the default one for `anond process`)."""

    targets: list[TargetName] = ["face", "plate"]
    detect: DetectSettings = DetectSettings()
    mask: MaskSettings = MaskSettings()
    verify: bool = True  # re-detect on the masked result and mask what is still found


class ImageSettings(_Section):
    """Photo output: format kept; metadata stripped except the allow-listed fields."""

    jpeg_quality: int = Field(95, ge=1, le=100)
    # Allow-list of metadata kept in the output. Known names: "datetime", "icc_profile",
    # "orientation" is never kept (the output is saved upright).
    keep_metadata: list[str] = []


class Settings(BaseSettings):
    """Everything anond reads from its configuration."""

    model_config = SettingsConfigDict(
        env_prefix="ANOND_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    runtime: RuntimeSettings = RuntimeSettings()
    models: ModelSettings = ModelSettings()
    profile: Profile = Profile()
    profiles: dict[str, Profile] = {}
    image: ImageSettings = ImageSettings()

    @model_validator(mode="after")
    def _default_profile_named(self) -> "Settings":
        self.profiles.setdefault("default", self.profile)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(path: str | Path | None = None, **overrides) -> Settings:
    """Read settings from `path` (or $ANOND_CONFIG), environment and defaults; raise ConfigError."""
    path = path or os.environ.get("ANOND_CONFIG") or None
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"config file is not valid TOML: {exc}") from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per bad setting: `key.path: reason`."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{key}: {err['msg']}")
    return "invalid setting " + "; ".join(parts)
