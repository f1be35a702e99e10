"""Guards: classifiers evaluated on the benchmark that are not judges."""
