"""ChoiceMap: the values of random choices, keyed by hierarchical address.

A choice map is an immutable pytree. Addresses are strings; a nested generative-function call at
address ``"enc"`` contributes a sub-map, so the site ``"z"`` inside it is ``"enc/z"``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

import jax

from ._errors import AddressError

SEP = "/"


def join(prefix: str, addr: str) -> str:
    """Join two address parts with ``/``."""
    return f"{prefix}{SEP}{addr}" if prefix else addr


def _suggest(addr: str, known: list[str]) -> str:
    close = difflib.get_close_matches(addr, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"known addresses: {sorted(known)}{hint}"


@jax.tree_util.register_pytree_node_class
class ChoiceMap(Mapping[str, Any]):
    """An immutable mapping from addresses to arrays (or nested choice maps).

    **Arguments:**

    - `data`: a mapping from address to value; nested mappings become nested choice maps, and keys
      containing ``/`` are split into nested levels.

    ```python
    cm = ChoiceMap({"z": 1.0, "enc/w": 2.0})
    cm["enc"]["w"] == cm["enc/w"]
    ```
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None):
        nested: dict[str, Any] = {}
        for key, value in (data or {}).items():
            if not isinstance(key, str) or not key:
                raise AddressError(f"choice-map keys must be non-empty strings, got {key!r}")
            head, _, rest = key.partition(SEP)
            if rest:
                value = {rest: value}
            if isinstance(value, Mapping):
                sub = ChoiceMap(value)
                if head in nested:
                    if not isinstance(nested[head], ChoiceMap):
                        raise AddressError(f"address {head!r} is both a value and a sub-map")
                    sub = nested[head].merge(sub)
                nested[head] = sub
            else:
                if head in nested:
                    raise AddressError(f"address {key!r} is given twice")
                nested[head] = value
        object.__setattr__(self, "_data", nested)

    # --- Mapping protocol -------------------------------------------------------------------
    def __getitem__(self, addr: str) -> Any:
        head, _, rest = addr.partition(SEP)
        if head not in self._data:
            raise AddressError(f"no choice at address {addr!r}; {_suggest(addr, self.addresses())}")
        value = self._data[head]
        if rest:
            if not isinstance(value, ChoiceMap):
                raise AddressError(f"address {head!r} holds a value, not a sub-map; cannot look up {addr!r}")
            try:
                return value[rest]
            except AddressError:
                raise AddressError(
                    f"no choice at address {addr!r}; {_suggest(addr, self.addresses())}"
                ) from None
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, str):
            return False
        try:
            self[addr]
        except AddressError:
            return False
        return True

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ChoiceMap is immutable")

    def __repr__(self) -> str:
        items = ", ".join(f"{k!r}: {_short(v)}" for k, v in self.flat().items())
        return f"ChoiceMap({{{items}}})"

    # --- helpers -----------------------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """All leaves keyed by full address (``"enc/z"``)."""
        out: dict[str, Any] = {}
        for key, value in self._data.items():
            if isinstance(value, ChoiceMap):
                for sub, leaf in value.flat().items():
                    out[join(key, sub)] = leaf
            else:
                out[key] = value
        return out

    def addresses(self) -> list[str]:
        """Every full address in the map."""
        return list(self.flat())

    def get_submap(self, addr: str) -> ChoiceMap:
        """The sub-map at ``addr``; an empty map when absent."""
        value = self._data.get(addr)
        if value is None:
            return ChoiceMap()
        if not isinstance(value, ChoiceMap):
            raise AddressError(f"address {addr!r} holds a value, but a nested call expects a sub-map there")
        return value

    def merge(self, other: Mapping[str, Any]) -> ChoiceMap:
        """A new map with the addresses of both; an address in both raises ``AddressError``."""
        return ChoiceMap({**self.flat(), **_disjoint(self, ChoiceMap(dict(other)))})

    def to_dict(self) -> dict[str, Any]:
        """A nested plain ``dict`` copy."""
        return {k: v.to_dict() if isinstance(v, ChoiceMap) else v for k, v in self._data.items()}

    # --- pytree ------------------------------------------------------------------------------
    def tree_flatten(self):
        keys = tuple(sorted(self._data))
        return tuple(self._data[k] for k in keys), keys

    @classmethod
    def tree_unflatten(cls, keys, children):
        obj = object.__new__(cls)
        object.__setattr__(obj, "_data", dict(zip(keys, children)))
        return obj


def _disjoint(a: ChoiceMap, b: ChoiceMap) -> dict[str, Any]:
    flat_a, flat_b = a.flat(), b.flat()
    both = sorted(set(flat_a) & set(flat_b))
    if both:
        raise AddressError(f"addresses {both} are given twice")
    return flat_b


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return f"{dtype}{list(shape)}" if shape is not None else repr(value)
