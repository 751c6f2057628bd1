"""bench-harness's built-in pruners, each a plugin module registered through the public entry points.

Installed as ``bench_harness_plugins`` (the folder is ``plugins/`` in the source tree). Nothing here
uses a private door into the harness: every module is written exactly as a third-party plugin is.
"""
