"""The commands of `python -m stream_app`."""
