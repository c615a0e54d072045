"""Monitoring outside the control path (Foxglove live view and MCAP recording)."""
