"""Verdicts that agree with the figures beside them, per method and per class.

Each verdict names what it rests on:
- "fails randomisation": the maps barely change when the weights are re-initialised or the model
  learns permuted labels (Adebayo et al. 2018; `medray.explain.sanity`): they show the input, not
  the model. Checked first, since no other figure of such maps means anything.
- "no localised evidence": the class's maps are spread over the image: their median energy in
  their top 5 % of pixels is below LOCALISED (a uniform map has 0.05). A class whose evidence is
  the absence of a lesion has no region to point at; ROAD of such maps says little either way.
- "faithful": ROAD (Rong et al. 2022; `medray.explain.road`) above random order beyond the 95 %
  interval: the interval of the mean paired difference (map's ROAD - random order's ROAD) lies
  above 0.
- "no better than random": otherwise, including maps whose ROAD is worse than random order.

A model trained elsewhere cannot be retrained on permuted labels: its randomisation part rests on
re-initialisation only, and the verdict says so.
"""

from __future__ import annotations

import numpy as np

FAITHFUL = "faithful"
NO_BETTER = "no better than random"
FAILS = "fails randomisation"
SPREAD = "no localised evidence"
# Twice a uniform map's 0.05: below, the top 5 % of pixels hold less than twice their share, as
# for a map spread evenly over half the image (a whole head). Grad-CAM's maps of the test phantoms
# at 48 px (a 6 x 6 CAM layer) score 0.12 for every class; a sharper map scores more.
LOCALISED = 0.10
RULE = ("ROAD (Rong et al. 2022) vs random order, 95 % interval of the paired difference; randomisation "
        "(Adebayo et al. 2018); localised: median energy in the top 5 % of pixels >= "
        f"{LOCALISED:.2f}")


def road_verdict(difference: dict | None) -> str:
    """`difference`: figure of the mean (map's ROAD - random order's ROAD) with its interval."""
    if difference is None or difference["ci"] is None:
        return NO_BETTER
    return FAITHFUL if difference["ci"][0] > 0 else NO_BETTER


def class_verdict(randomisation_failed: bool, concentration: float | None, difference: dict | None) -> str:
    if randomisation_failed:
        return FAILS
    if concentration is None or concentration < LOCALISED:
        return SPREAD
    return road_verdict(difference)


def method_verdict(randomisation: str | None, per_class: dict[str, str], overall_difference: dict | None) -> str:
    """The method's one-line verdict: its randomisation result, then ROAD over the whole sample,
    then which classes are faithful, spread or no better than random.

    randomisation: `sanity_verdict`'s verdict ("passed", "passed (... only; ...: not run)",
    "FAILED (...)", or None when no test ran)."""
    if randomisation is not None and randomisation.startswith("FAILED"):
        return f"{FAILS} ({randomisation[len('FAILED'):].strip(' ()')})"
    overall = road_verdict(overall_difference)
    classes = {verdict: [name for name, v in per_class.items() if v == verdict]
               for verdict in (FAITHFUL, NO_BETTER, SPREAD)}
    listed = "; ".join(f"{verdict}: {', '.join(names)}" for verdict, names in classes.items() if names)
    if randomisation is None:
        tested = "randomisation not run"
    elif randomisation == "passed":
        tested = "passes randomisation (weights re-initialised and labels permuted)"
    else:
        tested = "passes randomisation" + randomisation[len("passed"):]
    return f"{overall} on the sample by ROAD, {tested}" + (f"; per class, {listed}" if listed else "")


def paired_difference(road: np.ndarray, random_order: np.ndarray) -> np.ndarray:
    return np.asarray(road, np.float64) - np.asarray(random_order, np.float64)
