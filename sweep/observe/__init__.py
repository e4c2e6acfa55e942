"""Watching a run: TensorBoard boards per chain and per sweep, and the local TensorBoard server."""
