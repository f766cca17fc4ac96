"""The judge, apart from the contestant: the stabilization metrics, the matching they share,
and ``gavs-eval``. Nothing in ``infer`` is imported here, so a metric cannot lean on the
pipeline it scores."""
