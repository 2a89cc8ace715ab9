"""gunicorn settings of the sample app, versioned with it.

The python_wsgi recipe starts gunicorn with ``--config <deploy_to>/current/gunicorn.conf.py``
and ``--chdir <deploy_to>/current``, so this file is read again from the new release on every
graceful reload (HUP). Never set ``preload_app``: a reloaded master would keep the old code.
"""

wsgi_app = "app:application"
bind = "127.0.0.1:8000"
workers = 2
timeout = 30
graceful_timeout = 20  # in-flight requests of old workers get this long to finish on reload
backlog = 2048  # connections wait here while new workers start
