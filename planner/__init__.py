"""dq-planner: plan, size, quantize and launch DeepSeek models on your own hardware."""

__version__ = "0.1.0"
