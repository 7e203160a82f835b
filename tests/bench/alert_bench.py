"""Alert bench: the time from a node failure (Asterisk stopped) to the alert e-mail at the mail relay.

Runs the ``montest`` lab region of tests/lab/test_monitoring.py (pbx1 and mon1, scrapes every 5 s; the same
region and subnet, so never at the same time as that module) with an SMTP sink on the deploy host, stops
Asterisk ``ROUNDS`` times and prints each delay and the median. Needs root and the lab's tools:
``.venv/bin/python -m tests.bench.alert_bench``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from ekc.render.components.monitoring import FOR_ASTERISK_DOWN, GROUP_WAIT_S
from tests.lab.test_monitoring import PREFIX, SCRAPE_S, _edit
from tests.support.labregion import AppliedRegion, applied_region
from tests.support.smtpsink import SmtpSink

ROUNDS = 3
TIMEOUT_S = 300


def _one_round(region: AppliedRegion, sink: SmtpSink) -> float:
    """Stop Asterisk, wait for the FIRING mail, start it again and wait for the RESOLVED one."""
    seen = len(sink.messages)
    stopped = time.time()
    region.run("pbx1", "systemctl stop asterisk")
    mail = sink.wait_for(lambda m: "FIRING" in m.subject and "EkcAsteriskDown" in m.subject
                         and m.received_at >= stopped, timeout=TIMEOUT_S)
    region.run("pbx1", "systemctl start asterisk")
    if mail is None:
        raise SystemExit(f"no alert mail within {TIMEOUT_S} s; got {[m.subject for m in sink.messages[seen:]]}")
    # the trunk's alert (nothing answers its qualify in the lab) mails too: wait for Asterisk's own resolution
    sink.wait_for(lambda m: "RESOLVED" in m.subject and "EkcAsteriskDown" in m.subject
                  and m.received_at > mail.received_at, timeout=TIMEOUT_S)
    return mail.received_at - stopped


def main() -> None:
    """Print the delay of each round and the median."""
    with (tempfile.TemporaryDirectory(prefix="ekc-alert-bench-") as tmp,
          applied_region(Path(tmp), "montest", source="example", prefix=PREFIX, edit=_edit) as region):
        relay = region.spec.region.monitoring.smtp
        assert relay is not None
        time.sleep(6 * SCRAPE_S)  # every target scraped a few times
        with SmtpSink(relay.relay, relay.port) as sink:
            delays = [_one_round(region, sink) for _ in range(ROUNDS)]
    print(f"alert bench: rule for {FOR_ASTERISK_DOWN}, scrape and evaluation every {SCRAPE_S} s, "
          f"group_wait {GROUP_WAIT_S} s")
    for index, delay in enumerate(delays, 1):
        print(f"  round {index}: Asterisk stopped -> alert e-mail in {delay:.1f} s")
    print(f"  median {statistics.median(delays):.1f} s")


if __name__ == "__main__":
    main()
