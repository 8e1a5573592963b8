"""Detect and repair the QEMSCAN mosaic "pattern error" on a mineral-id grid.

A QEMSCAN map is stitched from fields (about 355 x 357 label pixels in the study) with
thin seam stripes between them (5 columns / 3 rows there) and each field displaced by a
pixel or so. The study deleted the stripes at hand-counted positions and re-shifted the
fields by hand. :func:`repair_mosaic` finds all of it by itself: whether there is a seam
pattern at all, the field pitch and size, the stripe widths and every field's shift;
then it cuts the fields out and puts them back on a clean grid.

Method
------
1. *Fill and stripe evidence.* Junk pixels are fill pixels flanked by field content (a
   fill pixel far from content is mount) and pixels unlike at least 3 of their 4
   neighbours (noise). Per column (row) gap, the share of junk and of label changes
   between non-junk pixels, over the pixels that cross the section, is searched with a
   comb over every pitch and phase (:mod:`~mineralseg.prep.mosaic.comb`; its noise level comes from lines that
   cross the section, so a small section in a wide mount is no harder than a big one).
   The stripe fill is the id (among those forming most thin, long runs; or none, for
   noise stripes) whose evidence is most periodic; when that choice shows no visible
   stripes (step 2), the next likeliest is looked at. No comb above ``COMB_MIN_Z`` on
   either axis means no seams, and the map comes back unchanged; when one axis's comb
   is sure (``COMB_SURE_Z``), the other needs only ``COMB_MIN_Z_OTHER`` (1-px stripes
   are mostly hidden under the shifts).
2. *Field grid.* In each row of fields, the columns near each tooth where most
   informative pixels are junk form the visible stripe (no visible stripes: no seams).
   Field size, pitch and origin are the most likely given the field starts and ends the
   stripes imply (shifts mostly 0 or +-1, field 0 at the map's corner, widths between
   two visible stripes, or pitch minus stripe width). Candidate grids: the best few
   pitches of the comb, each +-1, those with field 0 at the map's corner first, and the
   best grid with a field one pixel smaller or larger. Second-chance grids, tried only
   when those sort the pixels badly (step 5): on an axis with 1-px stripes, mostly
   hidden under the shifts, the comb can miss the pitch or fit every other seam, so
   pitches near the other axis's (QEMSCAN fields are frames of about one size), half
   of each pitch found and the comb's other candidates are fitted at that pitch, with
   any share of visible stripes.
3. *Shifts.* Every field's position is chosen among ``nominal +- max_shift`` per axis.
   A seam between two fields scores each pair of positions by log-likelihood ratios:
   pixels claimed as stripe should be junk, neighbouring pixels inside a field agree
   like neighbours in the map, and the two borders that meet across the seam agree like
   pixels at the implied distance (1, or more where the later field overwrote the
   earlier one; the mount's fill id counts there too, so that a field at the section's
   edge lines its outline up with its neighbours'). Across the other seams, the borders
   score the relative offset. Given one axis's shifts, the other axis's shifts of all
   fields are solved together by max-sum belief propagation over the grid of fields;
   the axes alternate.
4. *Reassembly.* Fields are copied onto the clean grid in reverse raster order (a later
   field owns the pixels it overwrote); the few clean pixels no field provides (hidden
   under a later field, or pushed off the map) take the value of a neighbour.
5. *Choice and trust.* A layout is judged by how it sorts the pixels: stripe pixels
   left in the repaired map (a missed seam line) plus field content dropped as stripe
   (a pitch too short, a field too small; with noise stripes net of the share of
   stripe pixels that match a neighbour by chance). The best grid pair is tried first,
   then the other row grids, then the other column grids, until one sorts the pixels
   well; if none does, the second-chance grids of each axis (all of them, the best
   replacing the layout only when it clearly sorts better) and a field a pixel smaller
   or larger. Last, each axis's pitch a pixel shorter and longer: of layouts that sort
   the pixels alike, the one whose shifts are likelier (``SHIFT_PRIOR``) wins (a pitch
   a pixel too long is made up for by shifts drifting field by field). The result is
   *trusted* when few stripe pixels are left, little content was dropped and the
   fields fit together (``confidence``); a map left alone although it shows seam
   stripes is not trusted either. :mod:`mineralseg.prep.pipeline` stops on an
   untrusted repair unless told to accept it.
6. *Fields on the SEM* (:mod:`~mineralseg.prep.mosaic.realign`, run by
   :func:`mineralseg.prep.seam_alignment.register_repaired` once the repaired map is
   registered): the SEM has no seams, so each field's interior is scored at every
   position by how well its ids explain the SEM grey on the label grid; a field whose
   best position beats the seams' choice clearly (``MIN_GAIN`` nats, ``MIN_SUPPORT``
   pixels in favour) is moved, and the map re-assembled and registered again.

Limits: fields of one size on a regular grid drawn in raster order, shifts of at most
``max_shift``, at least 3 fields along an axis with seams. With 1-pixel stripes a whole
seam line can be hidden when the fields along it all overlap or abut, the visible
stripes are wider than the nominal ones (a stripe shows where fields moved apart), so
a pitch one pixel too long with shifts drifting field by field can fit the pixels as
well as the true one, and a field at the section's edge may show too little to place
it. The check on the SEM (step 6) places such fields; it needs the SEM to show the
minerals' boundaries (grey contrast between the ids) and a registration that most fields
agree with. On whole generated samples (``benchmarks/prep_robustness.py``, 2026-12-01,
two draws of 308): 99.0 % and 99.4 % restored with the check on the SEM (95.5 % and
95.8 % by the seams alone; main of 2026-11-30: 92.9 % and 91.9 %), 1.0 % and 0.3 %
flagged (not trusted; all real failures), no crash, and one map wrong without a flag:
a pitch a pixel too short on an axis whose only two seams crossing the section fit
either pitch (the section's content is right, the map has 4 extra rows of mount at its
bottom). Registration corner error at most 0.35 label px on every map not flagged.

Everything runs in memory on the label grid with vectorised numpy: 0.1-1.5 s (median
0.2 s) for the 220-1,130 px maps of the benchmark on a shared 2-core machine, and a few
hundred MB of temporaries for a 4,700 x 4,700 map. Step 6 with its registrations: median
0.55 s per map of the benchmark (at most 4 s); on a 2,200 x 2,200 map of 355-px fields,
about 6 s per round (3.6 s for the registration trend, 2.5 s for the fields' positions)
besides the registration on the reduced SEM.

The package follows these steps, one module each:

- :mod:`~mineralseg.prep.mosaic.evidence`: step 1, fill and junk pixels, informative
  pixels and the stripe-evidence profiles;
- :mod:`~mineralseg.prep.mosaic.comb`: the periodic comb (pitch and phase search);
- :mod:`~mineralseg.prep.mosaic.grid`: step 2, visible stripes and the field grid;
- :mod:`~mineralseg.prep.mosaic.shifts`: step 3, seam likelihoods, belief propagation and
  border alignment;
- :mod:`~mineralseg.prep.mosaic.reassemble`: step 4, fields back on the clean grid and the
  seam continuity;
- :mod:`~mineralseg.prep.mosaic.repair`: the entry point and step 5
  (:func:`repair_mosaic`, :class:`MosaicRepair`, the layouts tried and the trust decision);
- :mod:`~mineralseg.prep.mosaic.realign`: step 6, the fields checked against the
  registered SEM (:func:`~mineralseg.prep.mosaic.realign.realign_fields`);
- :mod:`~mineralseg.prep.mosaic.figure`: :func:`seam_figure_data` for the QA figure.

This ``__init__`` only re-exports the public names.
"""

from mineralseg.prep.mosaic.figure import seam_figure_data
from mineralseg.prep.mosaic.repair import MosaicRepair, repair_mosaic

__all__ = ["MosaicRepair", "repair_mosaic", "seam_figure_data"]
