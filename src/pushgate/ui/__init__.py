"""The web dashboard, served by the gateway itself under ``/ui/`` (``ui/app.py``).

At the ``api/`` layer: it may import every layer below and talks to the same core and store
functions as the API. Server-rendered (Jinja2 templates in ``templates/``) with htmx vendored
in ``static/vendor/`` (nothing is loaded from another host); see ``ui/app.py`` for how a page
is added.
"""
