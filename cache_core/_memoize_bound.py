"""A memoized method bound to an instance (what ``obj.method`` returns for a memoized method)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._memoize import CacheInfo, Memoized

__all__ = ["BoundMemoized"]


class BoundMemoized:
    """A memoized method bound to an instance: ``obj.method``.

    Holds ``obj`` only as long as the caller holds this object (like a bound method); nothing
    in the cache refers to it. ``invalidate`` / ``refresh`` / ``cache_key`` prepend ``obj``.
    """

    __slots__ = ("__func__", "__self__")

    def __init__(self, memoized: Memoized[..., Any], instance: object) -> None:
        self.__func__ = memoized
        self.__self__ = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return self.__func__.invalidate(self.__self__, *args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.refresh(self.__self__, *args, **kwargs)

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        return self.__func__.cache_key(self.__self__, *args, **kwargs)

    def cache_info(self) -> CacheInfo:
        return self.__func__.cache_info()

    def cache_clear(self) -> None:
        self.__func__.cache_clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__func__, name)

    def __repr__(self) -> str:
        return f"<bound memoized {self.__func__.namespace} of {type(self.__self__).__name__}>"
