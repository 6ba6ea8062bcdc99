"""Unit tests of stream_app.runtime.faust_patches, one module per patch module."""
