"""anond: anonymize faces and licence plates in images and video, as a systemd service."""

__version__ = "0.1.0"
