"""What a video job decides before its first frame, resolved once from the settings, the
profile, the stream and the engine: the job (`anond.pipeline.video`) only reads it."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DetectSettings, Profile, VideoSettings
from ..track import TrackParams
from ..types import DetectorEngine, Target


@dataclass(frozen=True)
class VideoPlan:
    lookahead: int  # frames held before masking, so gaps are filled in both directions
    plate_every: int  # plates on every N-th detected frame (`plate_detect_stride`)
    track: TrackParams
    detect_low: DetectSettings  # detection: thresholds x low_score_ratio (weak boxes extend tracks)
    detect_verify: DetectSettings  # verification: the profile's thresholds
    detector_batch: int  # frames per detector call
    detect_threads: int  # detector calls at once

    @classmethod
    def build(cls, vs: VideoSettings, profile: Profile, fps: float,
              engine: DetectorEngine) -> "VideoPlan":
        lookahead = max(1, int(round(vs.lookahead_s * fps)))
        plate_every = vs.plate_detect_stride if "plate" in profile.targets else 1
        detect = profile.detect.for_video()  # models.video_plate's threshold, if it has one
        tiling = detect.tiling and vs.tiling
        # On the CPU batching brings no speed but memory (config: cpu_batch_size); several
        # calls at once keep the cores busier instead.
        on_cpu = engine.provider.startswith("CPU")
        return cls(
            lookahead=lookahead,
            plate_every=plate_every,
            track=TrackParams.from_settings(
                vs.track, fps=fps, lookahead_frames=lookahead, stride=vs.detect_stride * plate_every,
                high_score=detect.thresholds_by_class(),
                looked=frozenset(int(Target[t.upper()]) for t in engine.track_looks
                                 if t in profile.targets)),
            detect_low=detect.with_thresholds_scaled(vs.track.low_score_ratio, tiling=tiling),
            detect_verify=detect.model_copy(update={"tiling": tiling}),
            detector_batch=min(vs.batch_size, vs.cpu_batch_size) if on_cpu else vs.batch_size,
            detect_threads=vs.cpu_detect_threads if on_cpu else 1,
        )
