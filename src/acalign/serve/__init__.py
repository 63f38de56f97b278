"""``acalign serve``: a web page to explore alignments, search an index and compare with ground truth."""

from __future__ import annotations

from acalign.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
