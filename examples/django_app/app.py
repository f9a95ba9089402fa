"""A one-file Django project whose cache is ``cache_core.contrib.django.RedisCache``.

Run it under a threaded server (Redis URL from the environment)::

    CACHE_CORE_EXAMPLE_URL=redis://127.0.0.1:6379/0 \\
        waitress-serve --listen 127.0.0.1:8000 --threads 16 examples.django_app.app:application

Routes::

    GET /report/<name>   cache.get_or_set: a 50 ms "query", run once per cold name however
                         many requests (and worker processes) ask at the same moment
    GET /hit             cache.incr on a Redis integer: an exact count across threads
    GET /page            @cache_page(30): the whole response cached
    GET /stats           how many queries ran (a counter in the cache, shared by the workers)
"""

from __future__ import annotations

import os
import time
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-" + "x" * 40),
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        CACHES={
            "default": {
                "BACKEND": "cache_core.contrib.django.RedisCache",
                "LOCATION": os.environ.get("CACHE_CORE_EXAMPLE_URL", "redis://127.0.0.1:6379/0"),
                "KEY_PREFIX": os.environ.get("CACHE_CORE_EXAMPLE_PREFIX", "django-example"),
                "TIMEOUT": 60,
                "OPTIONS": {"L1": {"MAXSIZE": 10_000, "TTL": 5}},
            }
        },
    )
    django.setup()

from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.cache import cache_page

QUERY_SECONDS = float(os.environ.get("CACHE_CORE_EXAMPLE_QUERY_SECONDS", "0.05"))


def run_query(name: str) -> dict[str, Any]:
    """The expensive work a cache saves: counted in the cache, so every worker sees the count."""
    cache.add("queries", 0, None)
    cache.incr("queries")
    time.sleep(QUERY_SECONDS)
    return {"report": name, "rows": len(name) * 10}


def report(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse(cache.get_or_set(f"report:{name}", lambda: run_query(name), 60))


def hit(request: HttpRequest) -> JsonResponse:
    cache.add("hits", 0, None)
    return JsonResponse({"hits": cache.incr("hits")})


@cache_page(30)
def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"rendered at {time.time():.6f}")


def stats(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"queries": cache.get("queries", 0), "hits": cache.get("hits", 0)})


urlpatterns = [
    path("report/<str:name>", report),
    path("hit", hit),
    path("page", page),
    path("stats", stats),
]

application = get_wsgi_application()
