"""Peer implementations (PyTorch, flax.linen) of zoo models, for side-by-side benchmarks."""
