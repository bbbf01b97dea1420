"""RL fine-tuning of behaviour-cloned policies (PPO, FLaRe's recipe) in the meta-learning settings.

Layer: above `evaluation` (its env workers, protocol planning and episode rows), below `results`.
`metamanip-rl` (`cli/rl.py`) composes it from `conf/rl.yaml` and `conf/rl/`.
"""
