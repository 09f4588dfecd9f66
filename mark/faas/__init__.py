"""The FaaS tier: a local, AWS-Lambda-compatible function runtime and the function handler.

- :mod:`mark.faas.runtime`: :class:`~mark.faas.runtime.FunctionRuntime`, Lambda's Invoke API
  over sandboxes, one function per model (``mark faas``; ``mark up`` embeds it).
- :mod:`mark.faas.handler`: ``handler(event, context)``, what a function runs, here and on
  AWS Lambda (``deploy/lambda/Dockerfile``).
- :mod:`mark.faas.lambda_api` (the wire format), :mod:`mark.faas.pool` (one function's
  sandboxes), :mod:`mark.faas.sandbox` and :mod:`mark.faas.worker` (a sandbox's two sides),
  :mod:`mark.faas.v2` (KServe v2 bodies to numpy and back).

This package imports nothing itself: on Lambda the handler must not pull in the runtime's
web server, so import what you use from its module.
"""
