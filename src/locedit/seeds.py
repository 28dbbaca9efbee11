"""Every seed of the study, derived in one place from the config's master seed.

Each random draw of a job is a pure function of the master seed and the identity of what it is
drawn for (a datapoint, a purpose, an analysis cell), never of job order, so that adding a fact
or a cell leaves every other draw as it was. The derivations differ by purpose only because the
published results were made with them; changing one changes that purpose's draws (and the
numbers), so they are kept as they are and documented here.
"""

from __future__ import annotations

import hashlib


def fact_seed(seed: int, case_id: int) -> int:
    """Causal Tracing's noise seed of fact ``case_id``: independent draws per fact."""
    return int(seed) * 1_000_003 + int(case_id)


def derived_seed(seed: int, case_id: int, salt: str) -> int:
    """A 63-bit seed for one purpose (``salt``: ``essence``, ``fact_forcing``) of one datapoint."""
    digest = hashlib.sha256(f"{int(seed)}:{int(case_id)}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def ft_noise_seed(case_id: int) -> int:
    """Seed of FT's fresh fact-forcing noise copies: the case id, as the authors' code seeds it."""
    return int(case_id)


def cell_seed(seed: int, variant: str, method: str, metric_index: int) -> list[int]:
    """``np.random.default_rng`` seed of one analysis cell (variant, method, metric) from its
    identity, so adding a cell never changes another's draws (names enter by their code sum)."""
    return [int(seed), sum(map(ord, variant)), sum(map(ord, method)), int(metric_index)]


#: The fact world's independent random streams (``np.random.default_rng([seed, stream])``), one
#: per purpose, so that changing one part of the world (say profile lines) leaves the others be.
WORLD_STREAMS = {"facts": 0x1D, "records": 0x2E, "corpus": 0x3F, "profiles": 0x4B, "routes": 0x5C}


def world_stream(seed: int, purpose: str) -> list[int]:
    """``default_rng`` seed of one purpose of the fact world (:data:`WORLD_STREAMS`)."""
    return [int(seed), WORLD_STREAMS[purpose]]
