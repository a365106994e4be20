"""Report stage: pages and tables built from the records pgdr keeps in S3 (manifests, markers,
verification, drill and restore reports), never from the protected database's rows.

- :mod:`pgdr.report.history`: the history's points read from S3 (``collect``) and the page's upload
  (``publish``);
- :mod:`pgdr.report.charts`: the SVG charts' geometry, pure (numbers and shapes, no markup);
- :mod:`pgdr.report.history_page`: the page, rendered from ``templates/history.html.j2`` by Jinja2
  with autoescaping on, and its command line (``python -m pgdr.history``).
"""
