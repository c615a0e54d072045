"""dm1_ros."""
