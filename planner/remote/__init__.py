"""Reading published model files remotely (header bytes only): HTTP range reads with a header cache
(client.py), Hugging Face and ModelScope repositories (hubs.py), safetensors headers (safetensors.py).

Imported only for URL inputs (http://, https://, hf://, ms://): the headless path without a URL loads
none of it (nor requests, which does the transfers: proxies, NO_PROXY, certificates, pooled connections).
"""

import re

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_remote(spec: object) -> bool:
    """Whether a --model / --model-file / inspect argument is a URL (any scheme; unsupported ones are
    refused with the supported list when read)."""
    return isinstance(spec, str) and bool(_URL.match(spec))
