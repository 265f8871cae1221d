"""The hardware a plan runs on, as values: device profiles (profiles/hardware/), the devices a request
places layers on (profiles, detected devices handed in, RPC devices) and the host's measured kernels.

May import: planner.core's base modules (paths, data_files, catalog, plan, request_bounds, engine),
planner.core.ggml.
Never detects anything: planner.hardware measures and hands the results in.
"""
