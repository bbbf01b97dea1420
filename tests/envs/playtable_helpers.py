"""Small worlds for the simulator tests."""
TINY_CAMERAS = {"static": {"width": 32, "height": 32}, "gripper": {"width": 24, "height": 24}}
