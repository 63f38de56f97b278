"""Data layer: manifests, captions, audio decoding, features, the embedded corpus."""
