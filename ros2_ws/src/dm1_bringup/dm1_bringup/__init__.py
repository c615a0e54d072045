"""dm1_bringup."""
