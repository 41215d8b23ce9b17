import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent


def setting(name):
    # The deploy's env: comes from desired.yaml. The reconciler passes it to
    # the build, the migration and the preflight; supervisord starts gunicorn
    # and the worker without it, so a build step writes it to .env in the
    # release, read here when the variable is not set.
    if name in os.environ:
        return os.environ[name]
    env = BASE_DIR / ".env"
    if env.exists():
        for line in env.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key == name:
                return value
    raise RuntimeError(f"{name} is not set (desired.yaml env:)")


def database(url):
    # postgres://user[:password]@host:port/name
    u = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": u.path.lstrip("/"),
        "USER": unquote(u.username or ""),
        "PASSWORD": unquote(u.password or ""),
        "HOST": u.hostname or "",
        "PORT": str(u.port or ""),
    }


SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.staticfiles", "shop"]
ROOT_URLCONF = "orders.urls"
WSGI_APPLICATION = "orders.wsgi.application"
DATABASES = {"default": database(setting("DATABASE_URL"))}
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "static"
USE_TZ = True
TIME_ZONE = "UTC"  # Django sets TZ from it: gunicorn's log lines too
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

CELERY_BROKER_URL = setting("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = setting("CELERY_RESULT_BACKEND")
# A task is acknowledged when it is done, not when it is received: a worker
# stopped in the middle of one leaves it in the queue for the next.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
