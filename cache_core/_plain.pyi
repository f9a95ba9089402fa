from collections.abc import Callable
from typing import Any

def plain_json(obj: Any, /) -> bool: ...
def plain_msgpack(obj: Any, /) -> bool: ...
def has_mark(data: bytes, mark: bytes, /) -> bool: ...
def loads(
    decode: Callable[[bytes], Any],
    mark: bytes,
    revive: Callable[[Any], Any],
    fallback: Callable[[Any], Any],
    data: Any,
    /,
) -> Any: ...
