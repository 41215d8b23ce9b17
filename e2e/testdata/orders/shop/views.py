import json

from celery.result import AsyncResult
from django.conf import settings
from django.http import HttpResponse, JsonResponse

from shop import tasks
from shop.models import Order

VERSION = "v1"


def revision():
    # Written by the build step from $RECONCILER_COMMIT.
    return (settings.BASE_DIR / "REVISION").read_text().strip()


def index(request):
    return HttpResponse(f"orders {VERSION}: {Order.objects.count()} orders\n", content_type="text/plain")


def health(request):
    Order.objects.count()  # PostgreSQL answers
    return HttpResponse(f"ok {revision()}\n", content_type="text/plain")


def start_revision(request):
    # The test runs the worker's task through the web: ?gate=PATH holds it.
    result = tasks.revision.delay(request.GET.get("gate", ""))
    return JsonResponse({"id": result.id})


def task_result(request, task_id):
    # ?wait=SECONDS waits for the result (keep it under gunicorn's 30 s timeout).
    result = AsyncResult(task_id)
    wait = float(request.GET.get("wait", "0"))
    if wait > 0:
        try:
            result.get(timeout=wait)
        except Exception:  # noqa: BLE001 - the state says what happened
            pass
    body = {"state": result.state}
    if result.successful():
        body["result"] = result.result
    elif result.failed():
        body["error"] = repr(result.result)
    return JsonResponse(body, json_dumps_params={"sort_keys": True})
