"""``creme ekc_appeals``: the sync service (ekc-crm-appeals.service): a card for every call, every 2 seconds; and
the letters to citizens about their tasks, sent through the region's mail relay."""

import sys
import time

from django.core.management.base import BaseCommand
from django.db import DatabaseError, connections
from ekc_appeals import sync, tasks

INTERVAL_S = 2.0


class Command(BaseCommand):
    help = "Create and update the call cards from the queue log, send the letters due (with --once: one pass)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true")

    def handle(self, *args, **options):
        data = sync.catalogue()
        failing = ""
        while True:
            try:
                created = sync.sync_pass(data)
                if created:
                    self.stdout.write(f"ekc-crm-appeals: {created} cards created")
                sent = tasks.send_pending()
                if sent:
                    self.stdout.write(f"ekc-crm-appeals: {sent} letters sent")
                failing = ""
            except DatabaseError as error:  # a database being set up or failing over: retried
                message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                if message != failing:
                    print(f"ekc-crm-appeals: database not ready (retrying): {message}", file=sys.stderr)
                failing = message
                for conn in connections.all():
                    conn.close()
                if options["once"]:
                    raise
            if options["once"]:
                return
            sys.stdout.flush()
            time.sleep(INTERVAL_S)
