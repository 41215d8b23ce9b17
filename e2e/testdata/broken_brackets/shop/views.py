from django.conf import settings
from django.http import HttpResponse

from shop.models import Setting

VERSION = "v1"


def revision():
    # Written by the build step from $RECONCILER_COMMIT.
    return (settings.BASE_DIR / "REVISION").read_text().strip()


def released(response):
    # nginx logs this header: the tests count the responses of each release
    # where users' requests pass.
    response["X-Release"] = VERSION
    # The release the process started in. A module imported lazily (this
    # one: Django loads the URLconf on the first request) comes from
    # wherever the link points at that moment, so a worker of the old
    # release may answer with the new views: the bench tells such a mixed
    # answer from the new release's by this header.
    response["X-Release-Dir"] = str(settings.BASE_DIR)
    return response


def index(request):
    greeting = Setting.objects.get(name="greeting").value
    return released(HttpResponse(f"broken_brackets {VERSION}: {greeting}\n", content_type="text/plain"))


def health(request):
    Setting.objects.count()  # the database answers
    return released(HttpResponse(f"ok {revision()}\n", content_type="text/plain"))
