"""Payload decoders for uplinks that arrive without a TTN ``decoded_payload``.

A decoder takes the raw frame bytes and the fPort and returns what the corresponding TTN
payload formatter would have put into ``decoded_payload`` (or ``{"errors": [...]}``), so the
rest of the pipeline treats TTN-decoded and locally decoded uplinks identically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodes.decoders import lse01, sensecap_s2120

Decoder = Callable[[bytes, int], dict[str, Any]]

DECODERS: dict[str, Decoder] = {
    "lse01": lse01.decode,
    "lse01-dragino": lse01.decode_dragino_v121,
    "sensecap-s2120": sensecap_s2120.decode,
}


def get_decoder(name: str) -> Decoder:
    """The decoder registered as ``name``; a KeyError names the known ones."""
    try:
        return DECODERS[name]
    except KeyError:
        raise KeyError(f"unknown decoder {name!r} (known: {', '.join(sorted(DECODERS))})") from None
