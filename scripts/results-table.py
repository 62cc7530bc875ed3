"""Prints the README's result tables (markdown) from the cards in models/, so every figure shown
is the one the shipped artefact records. Usage: python scripts/results-table.py [MODELS_DIR]"""

import json
import sys
from pathlib import Path

from service.models.decision import Decision

models = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
cards = {p.parent.name: json.loads(p.read_text()) for p in sorted(models.glob("*/card.json"))}
CLASSES = ("N", "S", "V", "F", "Q")
# Published inter-patient results (DS1 -> DS2), Se / +P in %.
ANCHORS = [("de Chazal et al. 2004", "75.9 / 38.5", "77.7 / 81.9"),
           ("Llamedo and Martinez 2011", "77 / 39", "81 / 87"),
           ("Zhang et al. 2014", "79.1 / 36.0", "85.5 / 92.8")]


def pct(x):
    return f"{100 * x:.1f}"


def se_ppv(m, c):
    per = m["per_class"][c]
    return f"{pct(per['recall'])} / {pct(per['precision'])}" if per["support"] else "-"


def ectopic_calls(m) -> str:
    """Normal beats called S, V, F, Q per 100 normal beats, read from the card's confusion matrix
    (the same figure ecg-evaluate writes as ectopic_calls_per_100_normal)."""
    normal = m["confusion_matrix"][0]
    total = max(sum(normal), 1)
    calls = [100 * normal[CLASSES.index(c)] / total for c in "SVFQ"]
    return f"{sum(calls):.1f} ({' / '.join(f'{x:.1f}' for x in calls)})"


def inter_patient() -> None:
    print("| model | input | DS2 records | N Se / +P | S Se / +P | V Se / +P | F Se / +P | macro-F1 (N, S, V, F) "
          "| ectopic calls per 100 N: all (S / V / F / Q) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, card in cards.items():
        for key, records in (("inter_DS2", "all 22"), ("inter_DS2_without_232", "without 232")):
            m = card["metrics"].get(key)
            if m is None:
                continue
            f1 = sum(m["per_class"][c]["f1"] for c in "NSVF") / 4
            print(f"| `{name}` | {card['input'].get('kind', 'beat')} | {records} | "
                  + " | ".join(se_ppv(m, c) for c in "NSVF") + f" | {f1:.3f} | {ectopic_calls(m)} |")
    floor = next((c["floor"] for c in cards.values() if "floor" in c), None)
    if floor:  # the same tree in every context card that records it
        d = floor["inter_DS2"]
        cells = " | ".join(f"{pct(d[c]['se'])} / {pct(d[c]['ppv'])}" for c in "NSVF")
        f1 = sum(d[c]["f1"] for c in "NSVF") / 4
        print(f"| the floor: gradient-boosted tree (cards' `floor`) | context beat | all 22 | {cells} | {f1:.3f} "
              f"| {d['ectopic_calls_per_100_normal']:.1f} |")
    for source, s, v in ANCHORS:
        print(f"| {source} (published) | features | all 22 | - | {s} | {v} | - | - | - |")


def floor_margins() -> None:
    """By how much each context card's recipe beats the tree floor (its card's `floor`)."""
    print("| model | CV score: recipe / tree | DS2 S F1: minus the tree's | DS2 V F1: minus the tree's | DS2 N Se: minus the tree's |")
    print("|---|---:|---:|---:|---:|")
    for name, card in cards.items():
        f = card.get("floor")
        if not f:
            continue
        m = f["network_minus_floor"]
        ds2 = [f"{m[k]:+.3f}" if k in m else "-" for k in ("inter_DS2_S_f1", "inter_DS2_V_f1", "inter_DS2_N_se")]
        print(f"| `{name}` | {f['network_cv_score']:.3f} / {f['cv_score']:.3f} | " + " | ".join(ds2) + " |")


def selection() -> None:
    card = next((c for c in cards.values() if "selection" in c), None)
    if card is None:
        return
    print(f"\n{card['selection']['protocol']}; score: {card['selection']['score']}.\n")
    print("| candidate | body | settings | seed | score | N Se | S Se / +P | V Se / +P |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for c in card["selection"]["candidates"]:
        s = c["clean"]
        settings = ", ".join(o for o in c["overrides"]) or "preset"
        print(f"| {c['name']} | {c['model']} | {settings} | {c['seed']} | {s['score']:.3f} | {pct(s['N']['se'])} | "
              f"{pct(s['S']['se'])} / {pct(s['S']['ppv'])} | {pct(s['V']['se'])} / {pct(s['V']['ppv'])} |")


def other_splits() -> None:
    print("\n| model | trained on | tested on | accuracy % | macro-F1 | "
          + " | ".join(f"{c} Se / +P" for c in CLASSES) + " | train wall time |")
    print("|---|---|---|---:|---:|" + "---:|" * len(CLASSES) + "---:|")
    for name, card in cards.items():
        t = card["training"]
        for key, m in card["metrics"].items():
            if key == "inter_DS2_without_232":
                continue
            trained = {"intra": "80 % of all beats", "inter": "DS1", "all": "DS1 + DS2 (44 records)"}[t["split"]]
            tested = {"intra_test": "20 % of all beats", "inter_DS2": "DS2",
                      "training_records_fit": "its own training records (fit, not a test)"}[key]
            print(f"| `{name}` | {trained} | {tested} | {pct(m['accuracy'])} | {m['macro_f1']:.4f} | "
                  + " | ".join(se_ppv(m, c) for c in CLASSES) + f" | {t['wall_time_s'] / 60:.1f} min |")


def sweeps() -> None:
    for name, card in cards.items():
        sweep = card.get("nfe_vs_tolerance")
        if not sweep:
            continue
        split = card["training"]["split"]
        print(f"\n`{name}` ({'intra-patient test' if split == 'intra' else 'DS2'}, dopri5, each beat solved on its own):\n")
        print("| rtol = atol | accuracy % | macro-F1 | NFE per beat, mean (max) |")
        print("|---:|---:|---:|---:|")
        for r in sweep:
            print(f"| {r['rtol']:g} | {100 * r['accuracy']:.2f} | {r['macro_f1']:.4f} | "
                  f"{r['nfe_per_beat_mean']:.1f} ({r['nfe_per_beat_max']}) |")


def review() -> None:
    """What each card's decision does: on the CV held-out beats that chose it, and on DS2 once."""
    print("| model | beats | temperature / S, V, F from / review below | sent to review: all (N / S / V / F) "
          "| ectopic calls per 100 N: as trained, decided, not reviewed | S Se / +P not reviewed "
          "| V Se / +P not reviewed |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, card in cards.items():
        decision = card.get("decision")
        if not decision:
            continue
        rows = [("CV held-out (DS1)", decision.get("chosen_by", {}).get("held_out"))] if name.endswith("-ds1") else []
        rows += [(label, card["metrics"].get(key, {}).get("decision"))
                 for key, label in (("inter_DS2", "DS2, all 22"), ("inter_DS2_without_232", "DS2 without 232"))]
        rule = Decision.of_dict(decision)
        thresholds = ", ".join(f"{rule.min_probability[c]:g}" if c in rule.min_probability else "-" for c in "SVF")
        setting = f"{rule.temperature:g} / {thresholds} / {rule.review_below:g}"
        for label, f in rows:
            if not f:
                continue
            by = f["review_share_by_class"]
            calls = " / ".join(f"{f[k]['ectopic_calls_per_100_normal']:.1f}" for k in ("as_trained", "decided", "not_reviewed"))
            kept = f["not_reviewed"]
            print(f"| `{name}` | {label} | {setting} | {pct(f['review_share'])} "
                  f"({' / '.join(pct(by[c]) for c in 'NSVF')}) | {calls} | "
                  f"{pct(kept['S']['se'])} / {pct(kept['S']['ppv'])} | {pct(kept['V']['se'])} / {pct(kept['V']['ppv'])} |")


print("## Inter-patient (DS1 -> DS2)\n")
inter_patient()
print("\n## Confidence and review (each card's decision)\n")
review()
print("\n## The floor: each context recipe against the tree on the same inputs\n")
floor_margins()
print("\n## Cross-validation inside DS1 (the selection)")
selection()
print("\n## Every card")
other_splits()
sweeps()
