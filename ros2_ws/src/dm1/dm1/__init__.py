"""dm1: a ROS-free core for one-step DM1 policies (MeanFlow + dispersive regularization).

Nothing in this package imports rclpy. The robot path (`dm1.runtime`, `dm1.control`, `dm1.policy`) needs only
numpy and onnxruntime; training and export import torch.
"""

__version__ = "0.1.0"
