"""A small real Django project for the django recipe's tests (Django from the host: Debian's
python3-django, reached through the release venv's system site packages).

``/`` answers ``sample <version> <sha> orders=<n>`` (the request stream reads the version from it)
by reading every column of the ``orders`` table, so a model whose migration has not run fails;
``/health`` answers ``ok``, or 503 when the release holds a file ``UNHEALTHY``. The database is
SQLite in ``<deploy_to>/shared/`` (the release lives in ``<deploy_to>/releases/N``); static
files come from ``assets/`` and are collected into the release's ``static/``.
``V2`` adds a field to the model and its migration.
"""

from __future__ import annotations

MANAGE = """\
#!/usr/bin/env python3
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

SETTINGS = """\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent  # the release
SECRET_KEY = "sandbox-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.staticfiles", "orders"]
MIDDLEWARE = []
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR.parent.parent / "shared" / "shop.sqlite3"}
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "assets"]
"""

URLS = """\
from django.urls import path

from orders import views

urlpatterns = [path("health", views.health), path("", views.index)]
"""

WSGI = """\
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
application = get_wsgi_application()
"""

VIEWS = """\
from django.conf import settings
from django.http import HttpResponse

from orders.models import Order


def _read(name):
    try:
        return (settings.BASE_DIR / name).read_text().strip()
    except OSError:
        return ""


SHA = _read("REVISION")[:7] or "unknown"
VERSION = _read("VERSION") or SHA


def index(request):
    orders = list(Order.objects.all())  # every column: a model ahead of its table fails here
    return HttpResponse(f"sample {VERSION} {SHA} orders={len(orders)}\\n", content_type="text/plain")


def health(request):
    sick = _read("UNHEALTHY")
    if sick:
        return HttpResponse(f"unhealthy: {sick}\\n", status=503, content_type="text/plain")
    Order.objects.count()
    return HttpResponse("ok\\n", content_type="text/plain")
"""

MODELS = """\
from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=100)
"""

MIGRATION_1 = """\
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("item", models.CharField(max_length=100)),
            ],
        ),
    ]
"""

GUNICORN = """\
wsgi_app = "shop.wsgi:application"
bind = "127.0.0.1:8000"
workers = 2
timeout = 30
graceful_timeout = 20
backlog = 2048
"""

PROJECT = {
    "manage.py": MANAGE,
    "gunicorn.conf.py": GUNICORN,
    "shop/__init__.py": "",
    "shop/settings.py": SETTINGS,
    "shop/urls.py": URLS,
    "shop/wsgi.py": WSGI,
    "orders/__init__.py": "",
    "orders/models.py": MODELS,
    "orders/views.py": VIEWS,
    "orders/migrations/__init__.py": "",
    "orders/migrations/0001_initial.py": MIGRATION_1,
    "assets/site.css": "/* v1 */\n",
    "VERSION": "v1\n",
}

V2 = {
    "VERSION": "v2\n",
    "assets/site.css": "/* v2 */\n",
    "orders/models.py": MODELS + '    note = models.CharField(max_length=200, default="")\n',
    "orders/migrations/0002_order_note.py": """\
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orders", "0001_initial")]
    operations = [migrations.AddField("order", "note", models.CharField(default="", max_length=200))]
""",
}
