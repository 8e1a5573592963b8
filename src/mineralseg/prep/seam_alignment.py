"""Registration of a seam-repaired map, with each field's position checked on the SEM.

:func:`register_repaired` registers the repaired map onto the SEM
(:func:`~mineralseg.prep.registration.register_labels_to_sem`), then asks the SEM where
each field's content lies (:func:`~mineralseg.prep.mosaic.realign.realign_fields`): a
field the seams placed a pixel or two off is moved, the map re-assembled and registered
again (on the SEM already reduced to the label resolution, no second pass over the
full image), until no field moves (at most ``MAX_ROUNDS`` rounds). Each round first
measures the registration as most fields see it
(:func:`~mineralseg.prep.mosaic.realign.registration_trend`): a registration pulled
towards a block of fields that are off would otherwise make the SEM favour them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from mineralseg.prep.mosaic import MosaicRepair
from mineralseg.prep.mosaic.realign import MIN_GAIN, realign_fields, registration_trend
from mineralseg.prep.registration import (
    RegistrationOptions,
    RegistrationResult,
    register_labels_to_sem,
    sem_to_label_grid,
)

log = logging.getLogger(__name__)

# Rounds of "move fields, register again" (the second round finds fields whose gain
# was hidden by a registration made with other fields off; a third is rare).
MAX_ROUNDS = 3


def register_repaired(
    sem: Any,
    damaged: np.ndarray,
    rep: MosaicRepair,
    *,
    background_ids: Iterable[int],
    ignore_index: int | None,
    options: RegistrationOptions | None = None,
    realign: bool = True,
    min_gain: float = MIN_GAIN,
) -> tuple[MosaicRepair, RegistrationResult, list[dict]]:
    """Register ``rep.repaired`` onto ``sem`` and move fields the SEM places elsewhere.

    Parameters
    ----------
    sem : (H, W) array-like
        Greyscale SEM (as for :func:`register_labels_to_sem`).
    damaged : (H', W') ndarray
        The label map ``rep`` was repaired from.
    rep : MosaicRepair
        The seam repair; when nothing was detected (or ``realign`` is False) this is a
        plain registration of ``rep.repaired``.
    background_ids, ignore_index, options
        As for :func:`register_labels_to_sem`.
    realign : bool
        Check the fields' positions on the SEM.
    min_gain : float
        Log-likelihood gain (nats) needed to move a field.

    Returns
    -------
    (MosaicRepair, RegistrationResult, list of dict)
        The repair (with moved fields and the map re-assembled; its ``scores`` get
        ``sem_trend``, the record of :func:`registration_trend` per round), the
        registration of its map, and the moves made (``round`` added to each record of
        :func:`realign_fields`).
    """
    bg = [int(b) for b in background_ids]
    opts = options if options is not None else RegistrationOptions()
    result = register_labels_to_sem(sem, rep.repaired, background_ids=bg, ignore_index=ignore_index, options=opts)
    moves: list[dict] = []
    if not realign or not rep.detected or result.sem_fine is None:
        return rep, result, moves
    trends: list[dict] = []
    for k in range(1, MAX_ROUNDS + 1):
        grey = sem_to_label_grid(result.sem_fine, result.sem_factor, result.matrix, rep.repaired.shape)
        # the registration as most fields see it (one pulled by a few fields off is not)
        trend, seen = registration_trend(damaged, rep, grey, max_shift=rep.max_shift, ignore_index=ignore_index)
        trends.append({**seen, "round": k})
        grey = sem_to_label_grid(result.sem_fine, result.sem_factor, result.matrix @ trend, rep.repaired.shape)
        rep, moved = realign_fields(damaged, rep, grey, max_shift=rep.max_shift, ignore_index=ignore_index,
                                    min_gain=min_gain)
        if not moved:
            break
        moves += [{**m, "round": k} for m in moved]
        log.info("field realignment round %d: %d field(s) moved", k, len(moved))
        again = dataclasses.replace(opts, sem_prescale=result.sem_factor, sem_downscale=None)
        result = register_labels_to_sem(result.sem_fine, rep.repaired, background_ids=bg,
                                         ignore_index=ignore_index, options=again)
    rep = dataclasses.replace(rep, scores={**rep.scores, "sem_trend": trends})
    return rep, result, moves
