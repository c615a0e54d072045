"""dm1_sim."""
