"""Reinforcement-learning position sizing over the engine: a Gymnasium environment whose actions are target
positions disposed of by the engine's risk rules and filled by its simulated broker, PPO / DQN agents from
stable-baselines3, out-of-sample evaluation and MLflow registration with an ONNX policy."""
