"""Hardware: device profiles (profiles/hardware/*.toml) and on-node detection (NVML, npu-smi, host)."""
