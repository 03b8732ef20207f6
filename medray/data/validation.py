"""The validation split a model is picked by: warned about when a class has too few images in it.
(data.split.val_from_train carves one out of train instead: medray.data.sources.splits.)"""

from __future__ import annotations

from medray.data.sources.base import Source


def small_validation_warnings(source: Source, minimum: int) -> list[str]:
    """One sentence per class (multi-label: per label, counting the images that have it) with fewer
    than `minimum` validation images."""
    what = "label" if source.multi_label else "class"
    return [f"validation split: {what} {name} has {count} image{'s' if count != 1 else ''} (fewer than "
            f"data.min_val_per_class={minimum}), so the validation metrics that pick the model are noisy "
            f"for it; add images or set data.split.val_from_train (e.g. 0.1) to carve a stratified "
            f"validation split out of train"
            for name, count in zip(source.class_names, source.class_counts["val"]) if count < minimum]
