"""MRC extraction (Peng et al. 2023): query rows (``rows``), the prompted span model (``model``, ``decoding``), the pipes ``mrc_ner`` (``ner``) and ``mrc_relations`` (``relations``) on one base (``pipe``).
Registered through entry points; importing this package imports none of its modules (torch loads with ``model``).
May import torch, spaCy, thinc, numpy, :mod:`..encoder`, :mod:`..annotations`, :mod:`..pipe_base`, :mod:`..settings`, :mod:`..scoring` and :mod:`..data.schema`; never :mod:`..heads`."""
