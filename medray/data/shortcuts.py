"""Shortcut detector: can a class be told apart by how its images were acquired, not by anatomy?

Each usable row carries acquisition statistics that say nothing about anatomy (mean brightness,
contrast, size, stored mode, file format, bit depth, file-name prefix, source folder). A small
random forest is trained on those statistics alone and cross-validated: if it predicts the class
well above chance, a CNN can learn the scanner or the source instead of the lesion (Zech et al.,
"Variable generalization performance of a deep learning model to detect pneumonia in chest
radiographs", PLOS Medicine 2018, showed CNNs doing exactly that with the hospital of origin).
Each class is then checked one statistic at a time, so a warning names the class and the statistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.tree import DecisionTreeClassifier

# statistic as the report names it -> manifest column; the first two are numbers, the rest labels
STATISTICS = {"mean brightness": "mean", "contrast": "std", "height": "height", "width": "width",
              "bit depth": "bit_depth", "stored mode": "mode", "file format": "format",
              "file-name prefix": "name_prefix", "source folder": "source_folder"}
CATEGORICAL = {"stored mode", "file format", "file-name prefix", "source folder"}
# One statistic telling a class from the rest with this balanced accuracy (cross-validated) is a
# shortcut worth a warning; chance is 0.5.
SEPARABLE = 0.9
FOLDS = 5


def shortcut_report(used: pd.DataFrame, class_names: list[str], seed: int = 0) -> dict:
    """used: the manifest's usable rows (all splits). Returns the classifier's cross-validated
    accuracy against chance, per-class distributions of every statistic, and warnings.
    Not run on multi-label rows (a label vector each): it tells single classes apart."""
    if len(used) and np.ndim(used["label"].iloc[0]) == 1:
        return {"statistics": [], "rows": len(used), "warnings": [], "per_class": {},
                "skipped": "multi-label data (the detector tells one class per image apart)"}
    labels = used["label"].to_numpy().astype(int)
    present = np.unique(labels)
    varying = [name for name, column in STATISTICS.items() if column in used and used[column].nunique() > 1]
    report = {"statistics": varying, "rows": len(used), "warnings": [], "per_class": {}}
    folds = min(FOLDS, int(np.bincount(labels)[present].min()) if len(present) else 0)
    if len(present) < 2 or folds < 2 or not varying:
        report["skipped"] = ("every statistic is the same in all images" if not varying else
                             "needs at least two images of each of two classes")
        return report
    features = feature_table(used, varying)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    forest = RandomForestClassifier(n_estimators=100, max_depth=6, class_weight="balanced", random_state=seed)
    predicted = cross_val_predict(forest, features, labels, cv=splitter)
    counts = np.bincount(labels)[present]
    report |= {"balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
               "balanced_chance": 1 / len(present),
               "accuracy": float(accuracy_score(labels, predicted)),
               "majority_share": float(counts.max() / counts.sum()), "folds": folds}
    for index in present:
        name = class_names[index]
        scores = {statistic: one_statistic_score(features[[statistic]], labels == index, splitter)
                  for statistic in varying}
        best = max(scores, key=scores.get)
        report["per_class"][name] = {"best_statistic": best, "balanced_accuracy": scores,
                                     "distributions": {s: distribution(used, STATISTICS[s], s, labels == index)
                                                       for s in varying}}
        if scores[best] >= SEPARABLE:
            spread = report["per_class"][name]["distributions"][best]
            report["warnings"].append(warning(name, best, scores[best], spread))
    return report


def feature_table(used: pd.DataFrame, statistics: list[str]) -> pd.DataFrame:
    """Numbers as they are; labels (mode, format, prefix, folder) as codes, which trees split on."""
    return pd.DataFrame({statistic: (pd.factorize(used[STATISTICS[statistic]].astype(str))[0]
                                     if statistic in CATEGORICAL else used[STATISTICS[statistic]].astype(float))
                         for statistic in statistics})


def one_statistic_score(feature: pd.DataFrame, is_class: np.ndarray, splitter) -> float:
    """Cross-validated balanced accuracy of a depth-2 tree telling the class from the rest by one statistic."""
    if is_class.sum() < splitter.n_splits or (~is_class).sum() < splitter.n_splits:
        return 0.5
    tree = DecisionTreeClassifier(max_depth=2, class_weight="balanced", random_state=0)
    return float(balanced_accuracy_score(is_class, cross_val_predict(tree, feature, is_class, cv=splitter)))


def distribution(used: pd.DataFrame, column: str, statistic: str, is_class: np.ndarray) -> dict:
    """The class against the rest: quartiles of a number, or the commonest value and its shares."""
    inside, outside = used.loc[is_class, column], used.loc[~is_class, column]
    if statistic in CATEGORICAL:
        top = inside.astype(str).value_counts().index[0]
        return {"value": top, "share_in_class": float((inside.astype(str) == top).mean()),
                "share_in_rest": float((outside.astype(str) == top).mean()) if len(outside) else 0.0}
    return {side: [round(float(q), 1) for q in values.astype(float).quantile([0.25, 0.5, 0.75])]
            for side, values in (("class", inside), ("rest", outside))}


def warning(name: str, statistic: str, score: float, spread: dict) -> str:
    if "value" in spread:
        evidence = (f"{spread['value']!r} in {spread['share_in_class']:.0%} of its images against "
                    f"{spread['share_in_rest']:.0%} of the others")
    else:
        (low, median, high), (rest_low, rest_median, rest_high) = spread["class"], spread["rest"]
        evidence = (f"median {median:g} (middle half {low:g}-{high:g}) against {rest_median:g} "
                    f"({rest_low:g}-{rest_high:g}) in the others")
    return (f"class {name} can be told from the others by {statistic} alone ({evidence}; balanced accuracy "
            f"{score:.2f}, chance 0.50): its images may come from another scanner or source, and a model can "
            "learn that instead of the anatomy; check how each class was collected, or mix sources across classes")


def format_shortcuts(report: dict) -> list[str]:
    """The console lines of `medray data inspect`."""
    if "skipped" in report:
        return [f"shortcuts  not checked: {report['skipped']}"]
    lines = [f"shortcuts  acquisition statistics alone ({', '.join(report['statistics'])}) predict the class "
             f"with balanced accuracy {report['balanced_accuracy']:.2f} (chance {report['balanced_chance']:.2f}; "
             f"{report['folds']}-fold cross-validated random forest)"]
    lines += [f"  WARNING  {text}" for text in report["warnings"]]
    if not report["warnings"]:
        lines.append(f"  no class is separable by one acquisition statistic (balanced accuracy >= {SEPARABLE})")
    return lines
