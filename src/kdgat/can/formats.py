"""The CAN log formats kdgat reads (and, where a format has a writer, generates): one entry per format.

Adding a format is one module with a ``FORMAT = CanFormat(...)`` (see kdgat.can.messages.CanFormat and the four
below), one line here, and the format's name in the preprocess schema's enums (a test compares them).
"""

from __future__ import annotations

from kdgat.can import can_4col, candump, hcrl_csv, hcrl_txt
from kdgat.can.messages import CanFormat

# Detection tries the formats in this order.
REGISTRY: dict[str, CanFormat] = {
    spec.name: spec for spec in (hcrl_csv.FORMAT, hcrl_txt.FORMAT, can_4col.FORMAT, candump.FORMAT)
}
FORMATS = tuple(REGISTRY)
WRITE_FORMATS = tuple(name for name, spec in REGISTRY.items() if spec.write is not None)
