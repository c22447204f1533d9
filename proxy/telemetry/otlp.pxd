# Declarations for otlp.py: compiled because every sampled request's span is
# encoded here (in batches); nothing here is cimported.
