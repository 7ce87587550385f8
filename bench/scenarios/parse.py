"""Scenario 3, DAG-parse cost: importing a notifier and building one, over ``import airflow.sdk``.

Each variant runs in a fresh interpreter (its own Airflow home, default configuration), which
first imports ``airflow.sdk`` (every DAG file does), then times the notifier's import plus the
construction of one instance, and reads the resident set size before and after.  The median of
several runs is reported; the first run of all, which warms the OS file cache and writes the
Airflow home's configuration, is discarded.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from .common import Options, Result, Table, airflow_env, ratio, target_at_most

NAME = "parse"
#: the issue's target for ours, in ms (a timing: reported, never checked)
TARGET_MS = 50

#: label -> the statements a DAG file would run
VARIANTS = {
    "ours: AlertNotifier": "from airflow_alerting import AlertNotifier\nn = AlertNotifier()",
    "stock: SlackNotifier": (
        "from airflow.providers.slack.notifications.slack import SlackNotifier\n"
        "n = SlackNotifier(text='{{ ti.task_id }} failed', channel='#alerts')"
    ),
    "stock: PagerdutyNotifier": (
        "from airflow.providers.pagerduty.notifications.pagerduty import PagerdutyNotifier\n"
        "n = PagerdutyNotifier(summary='{{ ti.task_id }} failed', severity='error')"
    ),
    "stock: SmtpNotifier": (
        "from airflow.providers.smtp.notifications.smtp import SmtpNotifier\n"
        "n = SmtpNotifier(to='oncall@example.test', subject='{{ ti.task_id }} failed')"
    ),
}
#: the stock approach routes a critical failure to all three channels: all three notifiers
VARIANTS["stock: all three"] = "\n".join(VARIANTS[k] for k in list(VARIANTS)[1:])

_PROBE = """
import json, os, time
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
import airflow.sdk
before_rss = rss()
began = time.perf_counter()
exec(compile({code!r}, 'dag_file', 'exec'))
took = time.perf_counter() - began
print('BENCH ' + json.dumps({{'seconds': took, 'rss': rss() - before_rss}}))
"""


def measure(code: str, env: dict[str, str]) -> tuple[float, int]:
    """Run ``code`` after ``import airflow.sdk`` in a fresh interpreter.

    :param code: the DAG file's statements
    :param env: the interpreter's environment
    :return: the seconds it took and the bytes of resident memory it added
    """
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code)], env=env, capture_output=True, text=True, timeout=300
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"parse probe failed ({done.returncode}): {done.stderr[-2000:]}")
    found = json.loads(line[len("BENCH ") :])
    return float(found["seconds"]), int(found["rss"])


def run(options: Options) -> Result:
    """Measure every variant's median import-and-build time and memory.

    :param options: the run's options
    """
    env = airflow_env(options.workdir)
    repeats = 1 if options.short else 7
    # --short: ours and the stock trio only, no warm-up (a fresh interpreter costs seconds on CI)
    chosen = VARIANTS
    if options.short:
        chosen = {k: VARIANTS[k] for k in ("ours: AlertNotifier", "stock: all three")}
    if not options.short:
        measure(VARIANTS["stock: all three"], env)  # warm-up: file cache, airflow.cfg, provider discovery
    medians: dict[str, tuple[float, float]] = {}
    for label, code in chosen.items():
        samples = [measure(code, env) for _ in range(repeats)]
        medians[label] = (
            statistics.median(s for s, _ in samples),
            statistics.median(m for _, m in samples),
        )
    ours_s, ours_m = medians["ours: AlertNotifier"]
    rows = tuple(
        (
            label,
            f"{1000 * seconds:.1f}",
            f"{memory / 2**20:.1f}",
            ratio(seconds, ours_s),
            ratio(memory, ours_m),
        )
        for label, (seconds, memory) in medians.items()
    )
    table = Table(
        "3. DAG-parse cost: import + build one notifier, over `import airflow.sdk` (fresh interpreters)",
        ("variant", "ms (median)", "RSS MiB", "time / ours", "RSS / ours"),
        rows,
        (
            f"median of {repeats} fresh interpreter(s) each"
            + ("" if options.short else ", after one discarded warm-up")
            + "; RSS from /proc/self/statm;",
            f"target for ours: < {TARGET_MS} ms.",
        ),
    )
    figures = {f"parse.{label}.ms": round(1000 * s, 1) for label, (s, _) in medians.items()}
    figures.update({f"parse.{label}.rss_mib": round(m / 2**20, 1) for label, (_, m) in medians.items()})
    # timings only: nothing here is a count that must hold (a probe that fails to import raises
    # above); the target is reported
    target = target_at_most(f"parse: ours, ms (median of {repeats})", round(1000 * ours_s, 1), TARGET_MS)
    return Result(NAME, (table,), (target,), figures)
