"""Specific errors at the boundaries, so callers can decide: retry, quarantine, or stop.

Messages never contain file names, paths or coordinates: the caller adds the job id.
"""


class AnondError(Exception):
    """Base of every expected error. `permanent` errors quarantine the input; others retry."""

    permanent = True
    code = "error"


class ConfigError(AnondError):
    code = "config"


class UnsupportedMedia(AnondError):
    code = "unsupported_media"


class MediaTooLarge(UnsupportedMedia):
    """More pixels than the configured limit (`image.max_megapixels`, `video.max_megapixels`):
    refused from the header, before anything is decoded (decompression bombs)."""

    code = "too_large"


class CorruptMedia(AnondError):
    code = "corrupt_media"


class ModelMissing(AnondError):
    code = "model_missing"


class ModelChecksumMismatch(AnondError):
    code = "model_checksum"


class ProviderUnavailable(AnondError):
    code = "provider_unavailable"


class RegionsError(AnondError):
    code = "regions_invalid"


class RegionsMissing(RegionsError):
    """inbox regions = "required" and no sidecar came (within regions_wait_s in the service)."""

    code = "regions_missing"


class TransientIOError(AnondError):
    """Disk full, I/O error, GPU out of memory: worth another try later."""

    permanent = False
    code = "transient_io"


class Rejected(AnondError):
    """An operator rejected the result in the review UI: the input goes to the failed folder."""

    code = "rejected"


class TooManyDeliveries(AnondError):
    """cluster: the job was delivered cluster.max_deliver times without an end (its workers died
    or stalled on it): the input goes to the failed folder instead of another worker."""

    code = "max_deliveries"
