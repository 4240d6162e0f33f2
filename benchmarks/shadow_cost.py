"""What a shadow model costs production: /predict with no shadow, a shadow on spare cores only
(the default), and a shadow with no in-flight limit (only its low-priority thread and its queue
bound hold it back).

The shipped fp32 parent (version 1) shadows the int8 production model, the heaviest pairing the
registry has. Each setting runs twice, interleaved, so the spread between repeats shows the noise.

    python benchmarks/shadow_cost.py [--requests 1500] [--concurrency 1 16]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import urllib.request

from _common import running_app
from load_test import run_load

SETTINGS = {
    "no shadow": {},
    "shadow on spare cores": {"FER_SHADOW_MODEL": "fer-resnet18@1"},
    "shadow, no in-flight limit": {"FER_SHADOW_MODEL": "fer-resnet18@1", "FER_SHADOW_MAX_INFLIGHT": "1000"},
}


def scraped(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--port", type=int, default=8766)
    args = ap.parse_args()
    for conc in args.concurrency:
        n = args.requests if conc > 1 else max(100, args.requests // 5)
        for rep in range(args.repeats):
            for label, env in SETTINGS.items():
                with running_app(args.port, FER_WORKERS="1", **env):
                    url = f"http://127.0.0.1:{args.port}"
                    asyncio.run(run_load(url, 50, conc))  # warm-up
                    base_done = scraped(url, "fer_shadow_inference_duration_seconds_count")
                    base_skip = scraped(url, "fer_shadow_skipped_total")
                    r = asyncio.run(run_load(url, n, conc))
                    done = scraped(url, "fer_shadow_inference_duration_seconds_count") - base_done
                    skipped = scraped(url, "fer_shadow_skipped_total") - base_skip
                shadow = f", shadow compared {done:.0f} / skipped {skipped:.0f}" if env else ""
                print(
                    f"c{conc} run {rep + 1} {label:26s}: {r['rps']:6.1f} req/s, p50 {r['p50']:6.1f} ms, "
                    f"p99 {r['p99']:6.1f} ms, errors {r['errors']}{shadow}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
