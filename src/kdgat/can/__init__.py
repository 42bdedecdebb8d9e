"""CAN-bus logs in the formats the public intrusion-detection datasets use.

* ``messages``: :class:`CanMessages` (what every format reads into), :class:`CanFormat` (what a format is),
  the row problems and :class:`CanFormatError`;
* ``hcrl_csv``, ``hcrl_txt``, ``can_4col``, ``candump``: one module per format (detect, header, parse, fast path,
  write);
* ``capture_labels``: labels of a format whose lines carry none (candump), from the capture's metadata file;
* ``formats``: the registry of formats (``FORMATS``, ``WRITE_FORMATS``);
* ``reader``: ``read_can_file`` and ``detect_format``; ``writer``: ``write_can_file``;
* ``decode``: the vectorised text decoding the formats share.
"""
