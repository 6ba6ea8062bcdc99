"""The intake stage: packet events in, notifications out (see `service.py`)."""

from stream_app.stages.intake.service import install

__all__ = ["install"]
