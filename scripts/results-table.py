"""Prints the README's result tables (markdown) from the cards in models/, so every figure shown
is the one the shipped artefact records. Usage: python scripts/results-table.py [MODELS_DIR]"""

import json
import sys
from pathlib import Path

models = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
cards = {p.parent.name: json.loads(p.read_text()) for p in sorted(models.glob("*/card.json"))}
CLASSES = ("N", "S", "V", "F", "Q")


def pct(x):
    return f"{100 * x:.2f}"


print("| model | trained on | tested on | accuracy % | macro-F1 | " + " | ".join(f"{c} Se / +P" for c in CLASSES)
      + " | train wall time |")
print("|---|---|---|---:|---:|" + "---:|" * len(CLASSES) + "---:|")
for name, card in cards.items():
    for key, m in card["metrics"].items():
        per = m["per_class"]
        cells = [f"{pct(per[c]['recall'])} / {pct(per[c]['precision'])}" if per[c]["support"] else "-"
                 for c in CLASSES]
        t = card["training"]
        print(f"| `{name}` | {'80 % of all beats' if t['split'] == 'intra' else 'DS1'} | "
              f"{'20 % of all beats' if key == 'intra_test' else 'DS2'} | {pct(m['accuracy'])} | "
              f"{m['macro_f1']:.4f} | " + " | ".join(cells) + f" | {t['wall_time_s'] / 60:.1f} min |")

print()
for name, card in cards.items():
    sweep = card.get("nfe_vs_tolerance")
    if not sweep:
        continue
    print(f"`{name}` ({'intra-patient test' if card['training']['split'] == 'intra' else 'DS2'}, dopri5):\n")
    print("| rtol = atol | accuracy % | macro-F1 | NFE per beat, mean (max) | NFE per batch of 1024, mean |")
    print("|---:|---:|---:|---:|---:|")
    for r in sweep:
        print(f"| {r['rtol']:g} | {pct(r['accuracy'])} | {r['macro_f1']:.4f} | "
              f"{r['nfe_single_beat_mean']:.1f} ({r['nfe_single_beat_max']}) | {r['nfe_batch_1024_mean']:.1f} |")
    print()
