from django.conf import settings
from django.http import HttpResponse

from shop.models import Setting

VERSION = "v1"


def revision():
    # Written by the build step from $RECONCILER_COMMIT.
    return (settings.BASE_DIR / "REVISION").read_text().strip()


def index(request):
    greeting = Setting.objects.get(name="greeting").value
    return HttpResponse(f"broken_brackets {VERSION}: {greeting}\n", content_type="text/plain")


def health(request):
    Setting.objects.count()  # the database answers
    return HttpResponse(f"ok {revision()}\n", content_type="text/plain")
