"""``creme ekc_catalogue``: the departments, topics and holidays of the spec into the CRM (run by ekc-crm-migrate)."""

from django.core.management.base import BaseCommand
from ekc_appeals import sync


class Command(BaseCommand):
    help = "Bring the appeals' departments, topics and holidays in step with the region spec."

    def handle(self, *args, **options):
        data = sync.catalogue()
        sync.apply_catalogue(data)
        topics = sum(len(d["topics"]) for d in data["departments"])
        self.stdout.write(f"ekc_catalogue: {len(data['departments'])} departments, {topics} topics")
