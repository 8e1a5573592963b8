"""What each synthetic mineral looks like and how much of the rock it makes up.

The generator's recipe: a sandstone of detrital grains (quartz, albite, K-feldspar...),
pore-filling clays and cement between them, pores, and small accessory particles.
Minerals are looked up by name in the class schema, never by index, so any palette that
names them works (minerals it lacks are dropped and the rest renormalised).

Grey levels are backscatter (BSE) brightness on 0..255, ordered by mean atomic number:
epoxy (pores, mount) darkest; clays dark; quartz and albite almost the same; K-feldspar
and carbonates brighter; oxides, sulphides and heavy accessories brightest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mineralseg.classes import ClassSchema
from mineralseg.errors import UserError


@dataclass(frozen=True)
class Look:
    """Backscatter appearance of one mineral.

    Attributes
    ----------
    grey : float
        Mean grey level (0..255) of the clean signal.
    grain_sd : float
        Standard deviation of the per-grain mean around ``grey`` (grain-to-grain
        compositional spread; what makes quartz and albite overlap).
    texture : str
        Texture family: "quartz", "albite", "kfeldspar", "carbonate", "clay", "mica",
        "sulphide" or "plain".
    """

    grey: float
    grain_sd: float
    texture: str


# Quartz (mean Z ~10.8) and albite (~10.7) differ by less than their grain-to-grain spread:
# their means are 3 grey levels apart with sd 3, so grey level alone cannot part them.
LOOKS: dict[str, Look] = {
    "pore": Look(26.0, 1.0, "plain"),  # epoxy-filled pore
    "background": Look(26.0, 0.0, "plain"),  # epoxy mount around the section
    "quartz": Look(118.0, 3.0, "quartz"),
    "albite": Look(121.0, 3.0, "albite"),
    "plagioclase-other": Look(127.0, 3.0, "albite"),
    "k-feldspar": Look(143.0, 4.0, "kfeldspar"),
    "illite": Look(100.0, 5.0, "clay"),
    "kaolinite": Look(90.0, 5.0, "clay"),
    "chlorite": Look(112.0, 5.0, "clay"),
    "smectite": Look(84.0, 5.0, "clay"),
    "glauconite": Look(108.0, 4.0, "clay"),
    "muscovite": Look(124.0, 4.0, "mica"),
    "biotite": Look(134.0, 4.0, "mica"),
    "calcite": Look(150.0, 3.0, "carbonate"),
    "dolomite": Look(140.0, 3.0, "carbonate"),
    "ankerite": Look(157.0, 3.0, "carbonate"),
    "siderite": Look(172.0, 4.0, "carbonate"),
    "apatite": Look(162.0, 4.0, "plain"),
    "rutile": Look(190.0, 5.0, "plain"),
    "zircon": Look(205.0, 5.0, "plain"),
    "fe-oxides": Look(210.0, 5.0, "plain"),
    "barite": Look(216.0, 4.0, "plain"),
    "others": Look(146.0, 8.0, "plain"),
    "pyrite": Look(232.0, 3.0, "sulphide"),
}

# Target area fractions of the section (sum 1), split by where the mineral sits.
# Detrital grains: a quartz-rich arkosic sandstone (quartz ~53 %, albite ~15 %, K-feldspar 4 %).
GRAIN_FRACTIONS: dict[str, float] = {
    "quartz": 0.53,
    "albite": 0.15,
    "plagioclase-other": 0.01,
    "k-feldspar": 0.04,
    "glauconite": 0.005,
    "calcite": 0.008,
    "dolomite": 0.010,
    "siderite": 0.003,
    "ankerite": 0.002,
}
# Between the grains: pore-filling clays (~9.5 %), open pores (11 %), calcite cement.
CLAY_FRACTIONS: dict[str, float] = {
    "illite": 0.035,
    "kaolinite": 0.030,
    "chlorite": 0.025,
    "smectite": 0.005,
}
PORE_FRACTION = 0.11
CEMENT_MINERAL = "calcite"
CEMENT_FRACTION = 0.007
# Small particles painted over everything: pyrite ~1 %, heavy accessories ~1 %, micas 1 %.
PARTICLE_FRACTIONS: dict[str, float] = {
    "pyrite": 0.010,
    "rutile": 0.002,
    "zircon": 0.001,
    "apatite": 0.002,
    "fe-oxides": 0.002,
    "barite": 0.001,
    "others": 0.002,
    "muscovite": 0.006,
    "biotite": 0.004,
}

REQUIRED = ("pore", "background", "quartz", "albite")


@dataclass(frozen=True)
class Recipe:
    """The recipe resolved against a schema: ids, grey levels, target fractions.

    Attributes
    ----------
    ids : dict[str, int]
        Lower-case mineral name -> mineral id in the schema.
    grains, clays, particles : dict[str, float]
        Target section fractions of the minerals present in the schema.
    pore, cement : float
        Target fractions of open pores and of calcite cement (0 without calcite).
    """

    ids: dict[str, int]
    grains: dict[str, float]
    clays: dict[str, float]
    particles: dict[str, float]
    pore: float
    cement: float

    def id(self, name: str) -> int:
        """Mineral id of ``name`` (lower case)."""
        return self.ids[name]

    def look(self, name: str) -> Look:
        """Appearance of ``name`` (lower case)."""
        return LOOKS[name]

    def grey_table(self, n_minerals: int) -> np.ndarray:
        """(n_minerals,) float32 mean grey per mineral id (pore grey where unknown)."""
        table = np.full(n_minerals, LOOKS["pore"].grey, dtype=np.float32)
        for name, idx in self.ids.items():
            table[idx] = LOOKS[name].grey
        return table

    def targets(self) -> dict[str, float]:
        """All target section fractions by lower-case name (sum 1)."""
        out: dict[str, float] = {}
        for part in (self.grains, self.clays, self.particles):
            for name, frac in part.items():
                out[name] = out.get(name, 0.0) + frac
        out["pore"] = out.get("pore", 0.0) + self.pore
        if self.cement:
            out[CEMENT_MINERAL] = out.get(CEMENT_MINERAL, 0.0) + self.cement
        return out


def resolve_recipe(schema: ClassSchema) -> Recipe:
    """Match the recipe's minerals to ``schema`` by name.

    Parameters
    ----------
    schema : ClassSchema
        Must name at least pore, background, quartz and albite (case-insensitive).

    Returns
    -------
    Recipe
        Fractions of the minerals the schema lacks are dropped; the rest are scaled to sum 1.

    Raises
    ------
    UserError
        If a required mineral is missing from the schema.
    """
    names = {n.lower(): i for i, n in enumerate(schema.mineral_names)}
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise UserError(
            f"palette {schema.name!r} lacks {', '.join(missing)}; the synthetic generator "
            f"needs {', '.join(REQUIRED)}"
        )
    ids = {n: names[n] for n in LOOKS if n in names}

    def keep(d: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in d.items() if k in ids}

    grains, clays, particles = keep(GRAIN_FRACTIONS), keep(CLAY_FRACTIONS), keep(PARTICLE_FRACTIONS)
    cement = CEMENT_FRACTION if CEMENT_MINERAL in ids else 0.0
    total = sum(grains.values()) + sum(clays.values()) + sum(particles.values()) + PORE_FRACTION + cement
    norm = 1.0 / total

    def scaled(d: dict[str, float]) -> dict[str, float]:
        return {k: v * norm for k, v in d.items()}

    return Recipe(ids, scaled(grains), scaled(clays), scaled(particles), PORE_FRACTION * norm, cement * norm)
