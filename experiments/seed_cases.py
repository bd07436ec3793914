"""Reproduce the seeds' worked op examples; writes experiments/results/seed_cases.json.

Run: python experiments/seed_cases.py   (compare the printed numbers with seed-cases.md)
"""
import json
import pathlib

from jaxcnn.seed_examples import run_all

rows = run_all()
for r in rows:
    print(("ok  " if r["ok"] else "FAIL"), f"[{r['source']}] {r['name']}: {r['got']}")
out = pathlib.Path(__file__).parent / "results" / "seed_cases.json"
out.write_text(json.dumps(rows, indent=1))
print(f"{sum(r['ok'] for r in rows)}/{len(rows)} match; wrote {out}")
