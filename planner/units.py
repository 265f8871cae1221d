"""Human-readable sizes: binary GiB/MiB (what llama.cpp prints) and decimal GB (what vendors sell), for
renderers and messages alike (imports nothing)."""

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10


def gib(n: int | float) -> str:
    return f"{n / GiB:.2f} GiB"


def gb(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB"


def human(n: int | float) -> str:
    """A size in the largest binary unit it reaches: '1.25 GiB', '3.5 MiB', '505.0 KiB', '12 B'."""
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    if abs(n) >= MiB:
        return f"{n / MiB:.1f} MiB"
    if abs(n) >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{int(n)} B"


def size_text(n: int | float) -> str:
    """A size for a message: '1.25 GiB (1342177280 bytes)', or the bytes alone below 0.01 GiB, where
    two decimals of GiB would print 0.00 ('524288 bytes')."""
    n = int(n)
    if abs(n) < GiB // 100:
        return f"{n} byte{'' if n == 1 else 's'}"
    return f"{n / GiB:.2f} GiB ({n} bytes)"
