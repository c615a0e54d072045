"""Robot-side control: safety limits and filter, timestamped chunk schedule, executor and robot backends.

Imports numpy only (never torch or rclpy); `FrankyBackend` lives in `dm1.control.franky_backend` so importing
this package does not require franky.
"""
