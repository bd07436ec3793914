"""``jaxcnn demo``: reproduce the seeds' worked op examples and print them."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="reproduce the lecture notes' worked convolution/pooling examples")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..seed_examples import run_all

    rows = run_all()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        mark = "ok  " if r["ok"] else "FAIL"
        print(f"{mark} [{r['source']}] {r['name']:<{width}}  {r['got']}")
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0
