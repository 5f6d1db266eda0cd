"""Settings: one TOML file plus ANOND_* environment overrides, validated once at the edge.

Precedence: explicit values > environment (ANOND_SECTION__KEY) > TOML file > embedded defaults.
The rest of the code receives these models (or plain values taken from them), never the file.
"""

from __future__ import annotations

import os
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError
from .types import Target
from .watch import DEFAULT_IGNORE

MaskMode = Literal["blur", "pixelate", "solid"]
MaskShape = Literal["ellipse", "box"]
TargetName = Literal["face", "plate"]
DEFAULT_MODELS_DIR = Path(sys.prefix) / "share" / "anond" / "models"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuntimeSettings(_Section):
    """ONNX Runtime: which execution providers, in order, and how many threads."""

    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    require_gpu: bool = False  # refuse to start unless CUDA is really active
    intra_op_threads: int = Field(0, ge=0)  # 0 = ONNX Runtime's default (all cores)
    inter_op_threads: int = Field(1, ge=0)
    # ONNX Runtime's threads busy-wait for work between operators by default. anond runs
    # decoding, detection, masking and encoding side by side (and workers): spinning takes
    # the cores they need (hamilton on 2 cores: 20 % more CPU time, no faster). Off: they sleep.
    allow_spinning: bool = False
    cuda_device_id: int = Field(0, ge=0)


class ModelSettings(_Section):
    """Which installed models serve each target (names from models/manifest.toml)."""

    # Where `anond models install` puts the weights by default: inside the installation (the
    # virtual environment's share/ folder, /opt/anond/share/anond/models for the packaged
    # service), so every command finds them whatever its working directory.
    dir: Path = DEFAULT_MODELS_DIR
    manifest: Path | None = None  # default: the manifest shipped with anond
    face: str = "centerface"
    # Plates: the project's own MIT models (models/README.md, docs/BENCHMARKS.md).
    # anond-plate-db with its second look masks every openalpr eu + br plate at ~5x
    # platedet's photos a second and less area far from plates than platedet; platedet
    # (Ultralytics, AGPL-3.0 per its ONNX metadata) stays an opt-in. Each model brings its
    # own threshold (Settings below).
    plate: str = "anond-plate-db"
    # Faces in videos: a model of its own, "" = the same as `face`. RetinaFace-MobileNet0.25
    # runs in ~60 % of CenterFace's time per frame, and on the hamilton clip an independent
    # CenterFace finds 0.9 % of the input's faces in its output, where CenterFace masking
    # leaves 4 % for an independent RetinaFace (docs/BENCHMARKS.md). Photos keep `face`:
    # CenterFace finds more of the small faces of still images.
    video_face: str = "retinaface-mnet025"
    # Plates in videos: a model of its own, "" = the same as `plate`. With its own threshold
    # (`detect.video_plate_threshold`, else the model's). anond-plate-mnet025 with its check
    # model finds the small distant plates of dashcam footage that anond-plate-db misses, in
    # about a fifth of platedet's time a frame.
    video_plate: str = "anond-plate-mnet025"


# The weakest mask strengths allowed without `mask.allow_weak` (docs/PRIVACY.md: from the
# attack measurements of `anond eval --attack`: at most 1.5x chance identification).
SAFE_STRENGTH = {"blur_cells": 4.0, "blur_cells_small": 2.0, "pixel_blocks": 4.0}


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
    # Strength (docs/PRIVACY.md, `anond eval --attack`), a function of the masked box's size:
    # blur averages the box down to `blur_cells` cells across (`blur_cells_small` when its longer
    # side is under `small_object_px`: a 32 px face with the default margin) before smoothing;
    # pixelate shows `pixel_blocks` blocks across. At these values a face-recognition model ranks
    # masked faces first among 10 originals 12-13 % of the time (chance 10 %; 3-cell blur on
    # small faces: 16 %). More cells or blocks are weaker; above the safe maxima (SAFE_STRENGTH)
    # anond refuses to start unless allow_weak.
    blur_cells: float = Field(4.0, ge=1, le=64)
    blur_cells_small: float = Field(2.0, ge=1, le=64)
    small_object_px: float = Field(48.0, ge=0)
    pixel_blocks: float = Field(4.0, ge=1, le=64)
    allow_weak: bool = False

    def blur_cells_for(self, size: float) -> float:
        """Cells across a masked box whose longer side is `size` pixels."""
        return self.blur_cells_small if size < self.small_object_px else self.blur_cells

    @model_validator(mode="after")
    def _strong_enough(self) -> "MaskSettings":
        if self.allow_weak:
            return self
        for key, safe in SAFE_STRENGTH.items():
            if getattr(self, key) > safe:
                attack = "an unpixelate" if key == "pixel_blocks" else "a deblurring"
                raise ValueError(f"{key} {getattr(self, key):g} is weaker than the safe maximum {safe:g}: "
                                 f"masked faces are re-identified above chance after {attack} attack "
                                 "(docs/PRIVACY.md); set allow_weak = true to accept that")
        return self

    def margin(self, target: str) -> float:
        """`<target>_margin` ("face", "plate"); none for manual regions (drawn exactly)."""
        return getattr(self, f"{target}_margin", 0.0)

    def shape(self, target: str) -> MaskShape:
        """`<target>_shape` ("face", "plate", "manual")."""
        return getattr(self, f"{target}_shape")


class DetectSettings(_Section):
    """Detector thresholds and the small-object strategy."""

    # Low on purpose (recall first, measured on face_mask / openalpr: docs/BENCHMARKS.md);
    # most extra boxes at these levels are real but unlabelled background faces.
    face_threshold: float = Field(0.2, gt=0, le=1)
    # Unset, each target uses its model's own threshold (manifest `threshold`), else this.
    plate_threshold: float = Field(0.1, gt=0, le=1)
    # Plates in videos when `models.video_plate` names a model of its own; unset, that
    # model's threshold (manifest), else plate_threshold.
    video_plate_threshold: float | None = Field(None, gt=0, le=1)
    # Boxes of one object (whole image, tiles, enlarged pass) overlapping more than this are
    # merged into their union.
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
    # Faces: with `face_view_support` > 0, a box only the whole-image view finds, scoring under
    # `face_confident`, is kept only when a detail view (the enlarged image or its tiles) sees
    # it too at that score (anond/detect/engine.py `_supported`). Off by default: on face_mask
    # at 0.1 it took false boxes from 4.55 to 3.97 a photo and the falsely masked area from
    # 0.76 % to 0.53 %, but masked recall from 95.3 % to 95.0 % (docs/BENCHMARKS.md): for
    # inboxes where false blobs cost more than a few weak faces.
    face_confident: float = Field(0.5, gt=0, le=1)
    face_view_support: float = Field(0.0, ge=0, le=1)

    def threshold(self, target: str) -> float:
        """`<target>_threshold` ("face", "plate"): per-target settings are read by target name
        everywhere, so a new target needs its fields here and nowhere else."""
        return getattr(self, f"{target}_threshold")

    def view_support(self, target: str) -> tuple[float, float] | None:
        """(confident, support) of the target's view-support rule, or None (plates: their
        models' second stages judge weak boxes)."""
        if target != "face" or not self.face_view_support:
            return None
        return self.face_confident, self.face_view_support

    def thresholds_by_class(self) -> dict[int, float]:
        """{class id (`Target`): threshold} for every detector target."""
        return {int(Target[t.upper()]): self.threshold(t) for t in get_args(TargetName)}

    def for_video(self) -> "DetectSettings":
        """The settings video jobs detect with: `video_plate_threshold` as the plate threshold
        when set (the video plate model's calibration), else these."""
        if self.video_plate_threshold is None:
            return self
        return self.model_copy(update={"plate_threshold": self.video_plate_threshold})

    def with_thresholds_scaled(self, factor: float, **update) -> "DetectSettings":
        """A copy with every target's threshold multiplied by `factor` (and `update` applied)."""
        scaled = {f"{t}_threshold": self.threshold(t) * factor for t in get_args(TargetName)}
        return self.model_copy(update={**scaled, **update})


class Profile(_Section):
    """What to mask and how: one per inbox (or the default one for `anond process`)."""

    targets: list[TargetName] = ["face", "plate"]
    detect: DetectSettings = DetectSettings()
    mask: MaskSettings = MaskSettings()
    verify: bool = True  # re-detect on the masked result and mask what is still found


class ImageSettings(_Section):
    """Photo output: format kept; metadata stripped except the allow-listed fields."""

    jpeg_quality: int = Field(95, ge=1, le=100)
    webp_quality: int = Field(90, ge=1, le=100)  # lossy WebP only; lossless stays lossless
    # Photos with more pixels than this (from the header) are refused before decoding (reason
    # code too_large): a decompression bomb declares 50 000 x 50 000 in a few hundred bytes.
    # 200 MP covers the largest phone sensors; memory needed is about 15 bytes per pixel.
    max_megapixels: float = Field(200.0, gt=0)
    # Allow-list of metadata kept in the output. Known names: "datetime", "icc_profile",
    # "orientation" is never kept (the output is saved upright). An unknown name is an error,
    # so a typo cannot silently strip (or keep) something else.
    keep_metadata: list[Literal["datetime", "icc_profile"]] = []


class TrackSettings(_Section):
    """Video tracking: association over time and gap filling in both directions."""

    # Detections with score >= threshold x low_score_ratio (and below the profile threshold)
    # extend tracks that already exist (ByteTrack's second stage) and never start one alone...
    low_score_ratio: float = Field(0.5, gt=0, le=1)
    # ...unless they are seen on this many detected frames in a row (0: never start a track).
    # Off by default: with face_threshold at 0.2 it found nothing more on hamilton but masked
    # 3.6x as many boxes on the crowd clip (pedestrians_topdown); worth 3-5 with stricter
    # thresholds.
    low_confirm_hits: int = Field(0, ge=0)
    # A face detection at or above the profile threshold but under `support_below` starts a
    # track only if the other face model (`models.face` for video) also sees a face around it,
    # scoring at least `support_threshold`; otherwise it only extends existing tracks, like a
    # low-score one (anond/detect/support.py). Needs two face models; 0: no second look.
    # 0.5 removes 3 of the 4 false face tracks of a highway clip with no person in it (masked
    # area / 15); faces the picture's edge cuts are not asked (their crop is mostly replicated
    # border: a real profile at a stage clip's edge was demoted before that; docs/BENCHMARKS.md).
    support_below: float = Field(0.5, ge=0, le=1)
    support_threshold: float = Field(0.1, gt=0, le=1)
    match_iou: float = Field(0.2, ge=0, lt=1)  # first stage: IoU with the predicted box
    low_match_iou: float = Field(0.4, ge=0, lt=1)  # second stage (low scores): stricter
    # Masks start this many frames before a track is first detected and end this many after
    # it is last seen (both bounded by the lookahead window).
    pre_frames: int = Field(5, ge=0)
    post_frames: int = Field(5, ge=0)
    # A track missed for up to this long keeps its mask (boxes interpolated across the gap);
    # capped by video.lookahead_s.
    max_gap_s: float = Field(2.0, ge=0)
    smooth_frames: int = Field(5, ge=1)  # centred moving average over this many observations
    # A video plate model with a track look (manifest `track_look`: anond-plate-mnet025's is
    # anond-plate-db-look) has each new plate track looked at once before it is masked; a track
    # the look refused is looked at again after this long, then twice as long after each
    # refusal, at most lookahead_s / 2 apart (anond/track.py).
    look_again_s: float = Field(0.2, gt=0)
    # Interpolated and extended boxes grow by this fraction per frame away from the nearest
    # observation (capped at +50 %), because the object may have moved off the straight line.
    gap_growth: float = Field(0.02, ge=0, le=0.5)


class VideoSettings(_Section):
    """Video: streamed decode, batched detection, tracking, masking and re-encoding."""

    # Encoder: the source's codec family (H.264 -> libx264, HEVC -> libx265; others -> H.264,
    # or VP9 where the container cannot hold H.264), same size and pixel format family.
    crf: int = Field(18, ge=0, le=51)  # 18 = visually lossless for x264/x265
    preset: str = "veryfast"  # x264/x265 preset (CPU encoding must keep up with detection)
    decoder: Literal["cpu", "nvdec"] = "cpu"  # nvdec: h264_cuvid/hevc_cuvid... when present
    encoder: Literal["cpu", "nvenc"] = "cpu"  # nvenc: h264_nvenc/hevc_nvenc when present
    threads: int = Field(0, ge=0)  # decoder/encoder threads, 0 = automatic
    # Frames larger than this (8K UHD is 33 MP) are refused (too_large): the look-ahead holds
    # about lookahead_s x fps frames in memory.
    max_megapixels: float = Field(36.0, gt=0)
    # Raw H.264/H.265/MPEG video streams carry no frame times: frames are numbered at the
    # rate the stream announces (VUI timing, sequence header), else at this one.
    raw_fps: float = Field(25.0, ge=0.5, le=1000)
    # Detection: frames go to the detector in batches; with detect_stride = N only every
    # N-th frame is detected and the tracker interpolates the frames between.
    batch_size: int = Field(8, ge=1, le=64)
    # On the CPU provider batching brings no speed (measured: same ms per frame at batch 1
    # and 8) but ONNX Runtime's memory grows with it (~1.5 GiB more at 8 x 720p): frames go
    # to the detector this many at a time there.
    cpu_batch_size: int = Field(1, ge=1, le=64)
    # ...and this many of those calls run at once (threads; ONNX Runtime releases the GIL),
    # which keeps the cores busier than one call's own threads do (docs/BENCHMARKS.md).
    cpu_detect_threads: int = Field(2, ge=1, le=64)
    # Masking and verification of final frames: this many batches at once (threads), handed
    # to the encoder in order. One such thread was the slowest stage on hamilton.
    mask_threads: int = Field(2, ge=1, le=64)
    # ONNX Runtime threads per call of the video models (models.video_face / video_plate,
    # when they are not the photo models: their sessions serve videos only). Video jobs run
    # several calls at once (the two settings above), so one thread each wastes least on
    # hand-offs (measured on hamilton: 5-8 % less CPU than the default). 0 = runtime's.
    intra_op_threads: int = Field(1, ge=0)
    detect_stride: int = Field(1, ge=1, le=30)
    # Plates only on every N-th detected frame (faces on every one): the tracker interpolates
    # plate masks between, and verification searches every target around the masks of frames
    # whose plates were not detected. Plates move smoothly and are detected at a lower
    # threshold to extend tracks, so a stride keeps their masks (docs/BENCHMARKS.md).
    plate_detect_stride: int = Field(1, ge=1, le=30)
    # The profile's tiling / detail pass on video frames too: finds smaller faces and plates
    # but costs several detector passes per frame. Off: one whole-frame pass per frame.
    tiling: bool = False
    # Frames are held this long before being masked and encoded, so gaps can be filled in
    # both directions. Memory grows with it (about lookahead_s x fps frames), not with length.
    lookahead_s: float = Field(2.0, gt=0, le=30)
    # Verification: every verify_every-th masked frame is detected again after masking, around
    # its masks only (the rest of the frame is the decoded picture, already searched at a
    # lower threshold; frames skipped by detect_stride: every target around their
    # interpolated masks); residual detections are masked too.
    verify_every: int = Field(1, ge=1)
    # Container and stream metadata kept (case-insensitive key names). Everything else is
    # dropped; location tags (location, ISO6709, (c)xyz, GPS) only survive if listed here.
    keep_metadata: list[str] = ["creation_time", "language", "handler_name", "timecode"]
    # Data streams with these codec tags carry GPS or face positions (GoPro gpmd, Google camm,
    # Apple mebx): not copied. Other audio, subtitle and data streams are copied packet for packet.
    drop_data_tags: list[str] = ["gpmd", "camm", "mebx"]
    track: TrackSettings = TrackSettings()


class ServiceSettings(_Section):
    """The daemon (`anond run`): state, watching, workers, retries, metrics."""

    # Job queue (SQLite, WAL), instance id, per-job reports. Local disk only:
    # every instance needs its own (several instances may share an inbox, never a state_dir).
    state_dir: Path = Path("var/state")
    # Inputs that could not be processed, each with `<job id>.reason.json` (inboxes may override).
    failed_dir: Path = Path("var/failed")
    # A file is taken once its size and mtime stayed unchanged this long.
    stable_after_s: float = Field(5.0, gt=0, le=3600)
    # Full rescan of every inbox (network shares deliver no inotify events).
    rescan_interval_s: float = Field(30.0, gt=0, le=86400)
    inotify: bool = True  # use file system events too (watchdog); off = rescans only
    workers: int = Field(1, ge=1, le=64)  # jobs in parallel; each worker loads the models once
    retries: int = Field(3, ge=0, le=100)  # transient failures retried this often, then failed
    retry_backoff_s: float = Field(10.0, gt=0)  # first retry delay, doubled each time...
    retry_backoff_max_s: float = Field(600.0, gt=0)  # ...up to this
    # Intake pauses while an outbox or the state directory has less free space than this.
    min_free_mb: int = Field(512, ge=0)
    # Claims of an instance whose lease was not renewed for this long are taken over.
    lease_s: float = Field(60.0, ge=1, le=86400)
    # On SIGTERM the running jobs get this long to finish, then they are requeued.
    # Keep it below the unit's TimeoutStopSec.
    stop_timeout_s: float = Field(60.0, ge=0)
    # Events logged by `anond run` (the journal under systemd) unless --log-level is given:
    # info shows the service starting, each job queued and completed (ids and counts only).
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: bool = True  # Prometheus endpoint (counts and durations only)
    metrics_port: int = Field(9478, ge=0, le=65535)  # 0 = any free port (logged at start)
    # The address it listens on: loopback by default; another (e.g. 0.0.0.0 for a Prometheus on
    # another host) is logged as a warning at start, and the unit's IPAddressAllow= must allow it.
    metrics_address: IPvAnyAddress = IPv4Address("127.0.0.1")
    reports: bool = True  # write each job's report to state_dir/reports/<job id>.json
    history_days: float = Field(30.0, gt=0)  # finished jobs and reports kept this long
    # Unmasked originals anond keeps are personal data: failed inputs (failed/<job id>/, with
    # their reason files) and archived originals (inboxes with originals = "archive") are
    # deleted this many days after they were put there. 0 = kept for ever (`anond check` warns).
    failed_retention_days: float = Field(7.0, ge=0)
    archive_retention_days: float = Field(30.0, ge=0)


class Inbox(_Section):
    """One watched folder: where files arrive, where masked copies go, what happens to originals."""

    name: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")  # label in metrics and the job table (not logs); default inbox1, ...
    path: Path
    outbox: Path
    profile: str = "default"  # a key of [profiles] ("default" = [profile])
    recursive: bool = True  # also take files in sub-folders (the relative path is mirrored)
    originals: Literal["delete", "archive", "keep"] = "delete"
    archive: Path | None = None  # where originals go with originals = "archive"
    failed: Path | None = None  # default: service.failed_dir
    on_exists: Literal["suffix", "replace"] = "suffix"  # output name taken: `name (1).ext` or replace
    output_mode: int | str = "0640"  # permission bits of outputs, octal
    output_group: str | None = None  # group of outputs (the service user must be a member)
    # Manual regions sidecars (`<media name>.regions.json`): ignored, used when present,
    # or required (a file waits in the inbox until its sidecar is there).
    regions: Literal["off", "optional", "required"] = "optional"
    # With regions = "required": a file still without its sidecar this long after it stopped
    # changing goes to the failed folder (reason code regions_missing), not left waiting forever.
    regions_wait_s: float = Field(3600.0, gt=0)
    # Results wait in the review area (state_dir/review/<job id>) until an operator approves
    # them in the web UI ([web]); rejected ones go to the failed folder (reason code rejected).
    review: bool = False
    # Globs (case-insensitive, matched against every folder and file name below the inbox) that
    # are never inputs and never touched, only counted; this list replaces the default one
    # (NAS thumbnail/recycle folders, desktop junk, partial downloads: anond.watch.DEFAULT_IGNORE).
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))

    @model_validator(mode="after")
    def _consistent(self) -> "Inbox":
        if isinstance(self.output_mode, str):
            try:
                self.output_mode = int(self.output_mode, 8)
            except ValueError:
                raise ValueError(f"output_mode {self.output_mode!r} is not an octal number") from None
        if not 0 <= self.output_mode <= 0o777:
            raise ValueError("output_mode must be between 0000 and 0777")
        if self.originals == "archive" and self.archive is None:
            raise ValueError('originals = "archive" needs archive = FOLDER')
        if self.output_group is not None:
            import grp

            try:
                grp.getgrnam(self.output_group)
            except KeyError:
                raise ValueError(f"output_group {self.output_group!r}: no such group") from None
        inbox = absolute(self.path)
        for key in ("outbox", "archive", "failed"):
            other = getattr(self, key)
            if other is None:
                continue
            other = absolute(other)
            if other == inbox or inbox in other.parents or other in inbox.parents:
                raise ValueError(f"{key} must not be the inbox, inside it, or contain it")
        return self


class WebSettings(_Section):
    """The review UI (`anond web`, or inside `anond run` when enabled)."""

    enabled: bool = False  # serve the UI from the service process itself
    address: IPvAnyAddress = IPv4Address("127.0.0.1")
    port: int = Field(8750, ge=0, le=65535)  # 0 = any free port (logged as web.listening)
    # Login: a password hash (`anond web --hash-password`) or a file holding a token, readable
    # by the service user. Without either a random token is written to state_dir/web.token
    # (0600), and the UI is served on a loopback address only.
    password_hash: str = ""
    token_file: Path | None = None
    session_hours: float = Field(12.0, gt=0, le=24 * 30)  # a login lasts this long

    @model_validator(mode="after")
    def _login_beyond_loopback(self) -> "WebSettings":
        if self.password_hash and not self.password_hash.startswith("scrypt$"):
            raise ValueError("password_hash is not a hash from `anond web --hash-password`")
        if not self.address.is_loopback and not (self.password_hash or self.token_file):
            raise ValueError(f"address {self.address} is beyond this host: set password_hash "
                             "or token_file first (the generated token is for loopback only)")
        return self


class ClusterSettings(_Section):
    """Scale-out on NATS JetStream (`anond.cluster`): off = one host, exactly as without it."""

    enabled: bool = False
    servers: list[str] = ["nats://127.0.0.1:4222"]
    # all: watch inboxes and run jobs; intake: watch, claim and publish only (no models);
    # worker: run jobs pulled from the stream only (the inboxes' shares mounted, same names).
    role: Literal["all", "intake", "worker"] = "all"
    # Credentials (at most one kind): a token, a user and password, or an NKey seed file.
    token: str = ""
    user: str = ""
    password: str = ""
    nkey_file: Path | None = None
    tls_ca: Path | None = None  # TLS: the CA to trust, and a client certificate and key
    tls_cert: Path | None = None
    tls_key: Path | None = None
    stream: str = Field("ANOND_JOBS", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    subject: str = Field("anond.jobs", pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    consumer: str = Field("anond-workers", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # A job whose worker sent no progress for this long is delivered to another worker.
    ack_wait_s: float = Field(60.0, ge=1, le=3600)
    # Attempts per job (deliveries that ran it); the next delivery puts the input in the
    # failed folder with reason max_deliveries (a file that kills its workers, say).
    max_deliver: int = Field(5, ge=1, le=100)
    # Jobs handed out and not yet acknowledged, all workers together (JetStream MaxAckPending).
    max_ack_pending: int = Field(1000, ge=1)
    # Claimed jobs an intake holds before publishing them (a bound while the server is away).
    intake_window: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _one_credential(self) -> "ClusterSettings":
        kinds = [bool(self.token), bool(self.user or self.password), self.nkey_file is not None]
        if sum(kinds) > 1:
            raise ValueError("give one kind of credential: token, user/password or nkey_file")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not self.servers:
            raise ValueError("servers: at least one NATS server URL")
        return self

    @property
    def runs_intake(self) -> bool:
        """This instance watches its inboxes and claims files (alone, or role all|intake)."""
        return not self.enabled or self.role in ("all", "intake")

    @property
    def runs_workers(self) -> bool:
        """This instance loads the detectors and runs jobs (alone, or role all|worker)."""
        return not self.enabled or self.role in ("all", "worker")


def absolute(path) -> Path:
    """A configured path as the service uses it: `~` expanded, made absolute against the
    working directory (the one place paths of the configuration are resolved)."""
    return Path(os.path.abspath(os.path.expanduser(str(path))))


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
    video: VideoSettings = VideoSettings()

    @model_validator(mode="after")
    def _default_profile_named(self) -> "Settings":
        self.profiles.setdefault("default", self.profile)
        return self

    @model_validator(mode="after")
    def _thresholds_of_the_models(self) -> "Settings":
        """A profile that does not set `detect.<target>_threshold` gets the threshold the
        target's model states in the manifest (each model is calibrated for its own: a plate
        model's score is not another's), else the field's default; `video_plate_threshold`
        likewise from `models.video_plate` when that is a model of its own."""
        from .models import load_manifest

        try:
            specs = load_manifest(self.models.manifest)
        except ConfigError:
            return self  # reported where the models are loaded
        own = {f"{t}_threshold": getattr(self.models, t) for t in get_args(TargetName)}
        if self.models.video_plate and self.models.video_plate != self.models.plate:
            own["video_plate_threshold"] = self.models.video_plate
        for profile in {id(p): p for p in (self.profile, *self.profiles.values())}.values():
            for field_name, model in own.items():
                spec = specs.get(model)
                if spec is None or field_name in profile.detect.model_fields_set:
                    continue
                if spec.threshold is not None:
                    setattr(profile.detect, field_name, spec.threshold)
                elif field_name == "video_plate_threshold":  # not the photo model's calibration
                    setattr(profile.detect, field_name, DetectSettings.model_fields["plate_threshold"].default)
        return self

    # The daemon. Without [[inboxes]] it watches ./var/inbox and writes ./var/outbox.
    service: ServiceSettings = ServiceSettings()
    web: WebSettings = WebSettings()
    cluster: ClusterSettings = ClusterSettings()
    inboxes: list[Inbox] = [Inbox(path=Path("var/inbox"), outbox=Path("var/outbox"))]

    @model_validator(mode="after")
    def _inboxes_consistent(self) -> "Settings":
        known = set(self.profiles) | {"default"}
        names: set[str] = set()
        paths: set[Path] = set()
        for i, inbox in enumerate(self.inboxes):
            if not inbox.name:
                inbox.name = f"inbox{i + 1}"
            if inbox.profile not in known:
                raise ValueError(f"inboxes.{i}.profile: no profile {inbox.profile!r} "
                                 f"(known: {', '.join(sorted(known))})")
            if inbox.name in names:
                raise ValueError(f"inboxes.{i}.name: {inbox.name!r} is used twice")
            names.add(inbox.name)
            path = absolute(inbox.path)
            if any(path == p or p in path.parents or path in p.parents for p in paths):
                raise ValueError(f"inboxes.{i}.path: overlaps another inbox")
            paths.add(path)
            if self.cluster.enabled and inbox.review:
                raise ValueError(f"inboxes.{i}.review: review inboxes run on one host "
                                 "(cluster.enabled = false)")
        return self

    def inbox_targets(self) -> list[str]:
        """The targets (detectors) the inboxes' profiles need, sorted."""
        return sorted({t for inbox in self.inboxes for t in self.profiles[inbox.profile].targets})

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
