"""Deployment scripts: ``deploy.aws`` creates, updates and tears down a mark deployment on AWS
(``mark deploy aws`` / ``mark teardown aws``); ``deploy/lambda`` builds the function image.

An application-layer package: it may import every layer of ``mark``; nothing imports it but
the command line (``mark/cli/deploy.py``).
"""
