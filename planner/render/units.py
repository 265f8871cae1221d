"""Human-readable sizes: binary GiB/MiB (what llama.cpp prints) and decimal GB (what vendors sell)."""

GiB = 1 << 30
MiB = 1 << 20


def gib(n: int | float) -> str:
    return f"{n / GiB:.2f} GiB"


def gb(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB"


def human(n: int | float) -> str:
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    if abs(n) >= MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{int(n)} B"
