"""Remember a pure text function's recent results without keeping the texts themselves.

Failures of one cause repeat their message (retries, mapped instances, a storm), so the
redaction and normalisation regexes would run again on the same text.  The texts are untrusted
and may hold secrets the redactor is about to remove; a plain ``lru_cache`` would keep them
alive as keys for the life of the process (a DAG processor lives for days).  This cache keys
by a digest of the arguments instead, and what it stores is the function's result.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

__all__ = ["memo_by_digest"]

_Result = TypeVar("_Result")


def memo_by_digest(
    function: Callable[..., _Result], *, maxsize: int = 256, max_length: int = 4096
) -> Callable[..., _Result]:
    """Wrap ``function(*texts)`` (arguments ``str`` or ``None``) with a cache keyed by their digest.

    Calls whose texts are longer in total than ``max_length`` bypass the cache: long texts are
    rarely repeated and would cost a digest for nothing.

    :param function: a pure function of its text arguments
    :param maxsize: results remembered (least recently used evicted first)
    :param max_length: total text length above which the cache is bypassed
    """
    cache: OrderedDict[bytes, _Result] = OrderedDict()
    lock = threading.Lock()

    def cached(*texts: str | None) -> _Result:
        if sum(len(t) for t in texts if t) > max_length:
            return function(*texts)
        digest = hashlib.blake2b(digest_size=16)
        for text in texts:
            # "\x00" + None marker keeps ("a", None) and ("a", "") apart; surrogates survive
            digest.update(b"\x01" if text is None else b"\x00" + text.encode("utf-8", "surrogatepass"))
        key = digest.digest()
        with lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        result = function(*texts)
        with lock:
            cache[key] = result
            if len(cache) > maxsize:
                cache.popitem(last=False)
        return result

    return cached
